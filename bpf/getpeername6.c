// cgroup/getpeername6: the IPv6 twin of getpeername4 (v4-mapped VIPs come back v4-mapped).
#include "lib/mesh.h"

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_orig_dst *orig = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
	if (!orig || orig->family != MESH_AF_INET6)
		return 1;
	ctx->user_ip6[0] = orig->addr[0];
	ctx->user_ip6[1] = orig->addr[1];
	ctx->user_ip6[2] = orig->addr[2];
	ctx->user_ip6[3] = orig->addr[3];
	ctx->user_port = bpf_htons(orig->port);
	count(MESH_CTR_GETPEERNAME);
	return 1;
}
