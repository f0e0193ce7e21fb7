/* Every map of the datapath. Declared __weak so each per-hook object carries them and
 * `bpftool gen object` links them into one shared instance. */
#pragma once
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "counters.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_vip_key);
	__type(value, struct mesh_vip_value);
} vips SEC(".maps") __weak;

/* key: cgroup v2 id of a workload cgroup */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct mesh_workload);
} workloads SEC(".maps") __weak;

/* key: tenant id; only the control plane reads it */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct mesh_tenant);
} tenants SEC(".maps") __weak;

/* key: socket cookie of the client socket. LRU: a connect that dies before sockops sees it
 * cannot leak an entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct mesh_orig_dst);
} orig_dst_by_cookie SEC(".maps") __weak;

/* key: the client's (local ip, local port) = the accepted socket's peer */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_tuple);
	__type(value, struct mesh_orig_dst);
} orig_dst_by_tuple SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_sock_key);
	__type(value, __u64);
} sock_pairs SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_config);
} config SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps") __weak;
