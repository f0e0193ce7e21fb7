// cgroup/getpeername4: a redirected socket reports the VIP it asked for, not the listener.
#include "lib/mesh.h"

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_orig_dst *orig = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
	if (!orig || orig->family != MESH_AF_INET)
		return 1;
	ctx->user_ip4 = orig->addr[3];
	ctx->user_port = bpf_htons(orig->port);
	count(MESH_CTR_GETPEERNAME);
	return 1;
}
