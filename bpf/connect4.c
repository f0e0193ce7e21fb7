// cgroup/connect4: a workload's connect() to one of its tenant's IPv4 VIPs goes to the tenant
// listener at the workload's proxy address instead; the VIP is kept under the socket cookie.
#include "lib/mesh.h"

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != MESH_SOCK_STREAM)
		return 1;
	struct mesh_workload *w = current_workload();
	if (!w)
		return 1;
	__u32 dst[4];
	v4_mapped(dst, ctx->user_ip4);
	if (!w->has_proxy4) {
		count(MESH_CTR_MISSES);
		return 1;
	}
	__u16 listener = redirect_target(ctx, w, dst, bpf_ntohs(ctx->user_port), MESH_AF_INET);
	if (!listener)
		return 1;
	ctx->user_ip4 = w->proxy4;
	ctx->user_port = bpf_htons(listener);
	count(MESH_CTR_REDIRECTS);
	return 1;
}
