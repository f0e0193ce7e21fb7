/* Helpers shared by the hooks: address forms, workload lookup, counters. */
#pragma once
#include "maps.h"
#include <bpf/bpf_endian.h>

/* Loads a ctx field right here: without the barrier clang may sink loads from several branches
 * into one through a computed ctx pointer, which the verifier rejects. */
#define CTX_LOAD(expr)                                     \
	({                                                 \
		__u32 __v = (expr);                        \
		asm volatile("" : "+r"(__v));              \
		__v;                                       \
	})

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline int accel_enabled(void)
{
	__u32 zero = 0;
	struct mesh_config *c = bpf_map_lookup_elem(&config, &zero);
	return c && c->accel;
}

static __always_inline void v4_mapped(__u32 addr[4], __u32 ip4)
{
	addr[0] = 0;
	addr[1] = 0;
	addr[2] = bpf_htonl(0xffff);
	addr[3] = ip4;
}

static __always_inline int is_v4_mapped(const __u32 addr[4])
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
}

/* The workload of the calling process: its cgroup or the deepest attached ancestor, so processes
 * in sub-cgroups of a workload cgroup are redirected too. */
static __always_inline struct mesh_workload *current_workload(void)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct mesh_workload *found = bpf_map_lookup_elem(&workloads, &id);
	if (found)
		return found;
	for (int level = 1; level < MESH_MAX_CGROUP_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		struct mesh_workload *w = bpf_map_lookup_elem(&workloads, &id);
		if (w)
			found = w;
	}
	return found;
}

/* Looks the destination up among the workload's tenant VIPs; on a hit records the original
 * destination under the socket cookie and returns the listener port (0: leave the connect alone). */
static __always_inline __u16 redirect_target(void *ctx, struct mesh_workload *w, const __u32 addr[4],
					     __u16 port, __u16 family)
{
	struct mesh_vip_key key = {};
	key.tenant_id = w->tenant_id;
	key.port = port;
	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];
	struct mesh_vip_value *vip = bpf_map_lookup_elem(&vips, &key);
	if (!vip || !vip->listener_port) {
		count(MESH_CTR_MISSES);
		return 0;
	}
	struct mesh_orig_dst orig = {};
	orig.addr[0] = addr[0];
	orig.addr[1] = addr[1];
	orig.addr[2] = addr[2];
	orig.addr[3] = addr[3];
	orig.port = port;
	orig.family = family;
	orig.tenant_id = w->tenant_id;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_dst_by_cookie, &cookie, &orig, BPF_ANY)) {
		count(MESH_CTR_ERRORS);
		return 0;
	}
	return vip->listener_port;
}

char _license[] SEC("license") __weak = "Dual BSD/GPL";
