/* Per-CPU counter slots; bpf/gen.ts turns this enum into COUNTERS in generated.ts. */
#pragma once

enum mesh_counter {
	MESH_CTR_REDIRECTS = 0,     /* connect rewritten to the tenant listener */
	MESH_CTR_MISSES = 1,        /* workload connect to an address that is not one of its tenant's VIPs */
	MESH_CTR_ERRORS = 2,        /* map update failed: connection left unredirected */
	MESH_CTR_GETPEERNAME = 3,   /* getpeername answered with the VIP */
	MESH_CTR_TUPLES = 4,        /* original destination recorded under the client tuple */
	MESH_CTR_SOCKHASH_ADDS = 5, /* socket added to the acceleration SOCKHASH */
	MESH_CTR_ACCEL_REDIRECTS = 6, /* sk_msg message redirected to the peer socket */
	MESH_CTR_ACCEL_FALLBACKS = 7, /* sk_msg found no peer: message took the TCP path */
	MESH_CTR_MAX = 8,
};
