// cgroup/connect6: the IPv6 twin of connect4. A dual-stack socket connecting to a v4-mapped VIP
// (::ffff:10.96.0.10) matches the IPv4 VIP and is sent to the v4-mapped IPv4 proxy address.
#include "lib/mesh.h"

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != MESH_SOCK_STREAM)
		return 1;
	struct mesh_workload *w = current_workload();
	if (!w)
		return 1;
	__u32 dst[4];
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	int mapped = is_v4_mapped(dst);
	if (mapped ? !w->has_proxy4 : !w->has_proxy6) {
		count(MESH_CTR_MISSES);
		return 1;
	}
	__u16 listener = redirect_target(ctx, w, dst, bpf_ntohs(ctx->user_port), MESH_AF_INET6);
	if (!listener)
		return 1;
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = w->proxy4;
	} else {
		ctx->user_ip6[0] = w->proxy6[0];
		ctx->user_ip6[1] = w->proxy6[1];
		ctx->user_ip6[2] = w->proxy6[2];
		ctx->user_ip6[3] = w->proxy6[3];
	}
	ctx->user_port = bpf_htons(listener);
	count(MESH_CTR_REDIRECTS);
	return 1;
}
