/* Shared map keys/values of the isomesh datapath. The TypeScript side reads their layout from the
 * object's BTF (bpf/generated.ts), so a change here only needs `make -C bpf`. */
#pragma once
#include <linux/types.h>

#define MESH_AF_INET 2
#define MESH_AF_INET6 10
#define MESH_SOCK_STREAM 1
#define MESH_NAME_LEN 64
/* cgroup levels walked to find the workload a process belongs to (deepest match wins). */
#define MESH_MAX_CGROUP_DEPTH 16

/* Addresses are always 16 bytes, IPv4 as v4-mapped (::ffff:a.b.c.d), network byte order.
 * Ports are host byte order. */
struct mesh_vip_key {
	__u32 tenant_id; /* a VIP belongs to one tenant: tenants may reuse VIPs and ports */
	__u16 port;
	__u16 pad;
	__u32 addr[4];
};

struct mesh_vip_value {
	__u16 listener_port;
	__u16 pad;
	__u32 flags;
};

struct mesh_workload {
	__u32 tenant_id;
	__u32 proxy4;    /* proxy address for IPv4 connects, network byte order */
	__u32 proxy6[4]; /* proxy address for IPv6 connects */
	__u8 has_proxy4;
	__u8 has_proxy6;
	__u16 pad;
	char name[MESH_NAME_LEN]; /* control-plane bookkeeping: survives a runtime restart in the pin */
};

struct mesh_tenant {
	char name[MESH_NAME_LEN];
};

struct mesh_orig_dst {
	__u32 addr[4];
	__u16 port;
	__u16 family; /* family of the socket that connected (AF_INET or AF_INET6) */
	__u32 tenant_id;
};

/* The client's end of a redirected connection, as the proxy sees it as the accepted peer. */
struct mesh_tuple {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* A socket in the acceleration SOCKHASH, keyed by its own (local, remote). */
struct mesh_sock_key {
	__u32 local[4];
	__u32 remote[4];
	__u16 local_port;
	__u16 remote_port;
};

struct mesh_config {
	__u32 accel; /* 1: sk_msg short-circuits redirected app<->proxy connections */
	__u32 pad;
};
