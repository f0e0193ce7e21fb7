// sk_msg: with acceleration on, data written on one end of a redirected app<->proxy connection
// goes straight to the peer socket's receive queue, skipping the TCP/IP stack.
#include "lib/mesh.h"

SEC("sk_msg")
int mesh_msg_redirect(struct sk_msg_md *msg)
{
	if (!accel_enabled())
		return SK_PASS;
	/* the peer socket is keyed by its own (local, remote) = our (remote, local) */
	struct mesh_sock_key peer = {};
	/* read every field, then choose by value (CTX_LOAD: no branching on ctx loads) */
	__u32 family = CTX_LOAD(msg->family), rip4 = CTX_LOAD(msg->remote_ip4), lip4 = CTX_LOAD(msg->local_ip4);
	__u32 rip6[4] = { CTX_LOAD(msg->remote_ip6[0]), CTX_LOAD(msg->remote_ip6[1]), CTX_LOAD(msg->remote_ip6[2]), CTX_LOAD(msg->remote_ip6[3]) };
	__u32 lip6[4] = { CTX_LOAD(msg->local_ip6[0]), CTX_LOAD(msg->local_ip6[1]), CTX_LOAD(msg->local_ip6[2]), CTX_LOAD(msg->local_ip6[3]) };
	if (family == MESH_AF_INET) {
		v4_mapped(peer.local, rip4);
		v4_mapped(peer.remote, lip4);
	} else {
		peer.local[0] = rip6[0];
		peer.local[1] = rip6[1];
		peer.local[2] = rip6[2];
		peer.local[3] = rip6[3];
		peer.remote[0] = lip6[0];
		peer.remote[1] = lip6[1];
		peer.remote[2] = lip6[2];
		peer.remote[3] = lip6[3];
	}
	peer.local_port = (__u16)bpf_ntohl(msg->remote_port);
	peer.remote_port = (__u16)msg->local_port;
	/* no peer in the map (e.g. the proxy's cgroup has no sockops): SK_PASS without a target
	 * sends the message the ordinary way instead of dropping it */
	if (bpf_msg_redirect_hash(msg, &sock_pairs, &peer, BPF_F_INGRESS) == SK_PASS)
		count(MESH_CTR_ACCEL_REDIRECTS);
	else
		count(MESH_CTR_ACCEL_FALLBACKS);
	return SK_PASS;
}
