// sockops: publishes the original destination of a redirected connection under the client's
// (local ip, local port) — the accepted socket's peer, since its cookie differs from the
// client's — cleans up on close, and (acceleration on) puts both ends of app<->proxy
// connections in the SOCKHASH that mesh_msg_redirect uses.
#include "lib/mesh.h"

/* Reads both address forms unconditionally (CTX_LOAD) and picks by value. */
static __always_inline void pick_addr(__u32 family, __u32 ip4, const __u32 ip6[4], __u32 addr[4])
{
	if (family == MESH_AF_INET) {
		v4_mapped(addr, ip4);
	} else {
		addr[0] = ip6[0];
		addr[1] = ip6[1];
		addr[2] = ip6[2];
		addr[3] = ip6[3];
	}
}

static __always_inline void local_addr(struct bpf_sock_ops *skops, __u32 addr[4])
{
	__u32 ip6[4] = { CTX_LOAD(skops->local_ip6[0]), CTX_LOAD(skops->local_ip6[1]), CTX_LOAD(skops->local_ip6[2]), CTX_LOAD(skops->local_ip6[3]) };
	pick_addr(CTX_LOAD(skops->family), CTX_LOAD(skops->local_ip4), ip6, addr);
}

static __always_inline void remote_addr(struct bpf_sock_ops *skops, __u32 addr[4])
{
	__u32 ip6[4] = { CTX_LOAD(skops->remote_ip6[0]), CTX_LOAD(skops->remote_ip6[1]), CTX_LOAD(skops->remote_ip6[2]), CTX_LOAD(skops->remote_ip6[3]) };
	pick_addr(CTX_LOAD(skops->family), CTX_LOAD(skops->remote_ip4), ip6, addr);
}

static __always_inline void add_to_sockhash(struct bpf_sock_ops *skops)
{
	struct mesh_sock_key key = {};
	local_addr(skops, key.local);
	remote_addr(skops, key.remote);
	key.local_port = (__u16)skops->local_port;
	key.remote_port = (__u16)bpf_ntohl(skops->remote_port);
	if (bpf_sock_hash_update(skops, &sock_pairs, &key, BPF_ANY) == 0)
		count(MESH_CTR_SOCKHASH_ADDS);
	else
		count(MESH_CTR_ERRORS);
}

static __always_inline void watch_state(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	if (skops->family != MESH_AF_INET && skops->family != MESH_AF_INET6)
		return 1;
	__u64 cookie;
	struct mesh_orig_dst *orig;
	struct mesh_tuple tuple = {};

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* watch from the SYN on, so a connect that fails still cleans its cookie entry */
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie))
			watch_state(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		orig = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
		if (!orig)
			break;
		local_addr(skops, tuple.addr);
		tuple.port = (__u16)skops->local_port;
		if (bpf_map_update_elem(&orig_dst_by_tuple, &tuple, orig, BPF_ANY) == 0)
			count(MESH_CTR_TUPLES);
		else
			count(MESH_CTR_ERRORS);
		watch_state(skops);
		if (accel_enabled())
			add_to_sockhash(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* the proxy's end: accelerate only connections a workload was redirected into */
		if (!accel_enabled())
			break;
		remote_addr(skops, tuple.addr);
		tuple.port = (__u16)bpf_ntohl(skops->remote_port);
		if (bpf_map_lookup_elem(&orig_dst_by_tuple, &tuple))
			add_to_sockhash(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&orig_dst_by_cookie, &cookie);
		local_addr(skops, tuple.addr);
		tuple.port = (__u16)skops->local_port;
		bpf_map_delete_elem(&orig_dst_by_tuple, &tuple);
		break;
	}
	return 1;
}
