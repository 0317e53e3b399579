/*
 * kvcache.h — the C ABI of KVCacheEngine (libkvcache.so), the only header an inference
 * server needs.
 *
 * WHAT IT IS
 *   A KV-cache manager: it owns the physical memory of every sequence's attention keys and
 *   values, shares full blocks of identical prompt prefixes between sequences (prefix
 *   caching, keyed by the chained block hash documented below), and reports what it caches
 *   as events so that a router can send requests where their prefix already is.
 *   The server computes K/V itself and writes them where this library points.
 *
 * CONVENTIONS (every function)
 *   - Every call that can fail returns kvc_status: KVC_OK (0) or a negative KVC_ERR_* code.
 *     Outputs are returned through pointers.
 *   - On failure the engine's observable state is unchanged (no sequence, block, cached
 *     prefix or statistic differs from before the call) and output pointers are left
 *     untouched, except where a function documents otherwise (the BUFFER_TOO_SMALL counts,
 *     kvc_engine_create's *out).
 *   - On failure kvc_last_error() returns a message for the calling thread naming the call
 *     and the offending value. Successful calls do not clear it (like errno).
 *   - Never aborts on bad input. A NULL handle or output pointer, a NULL input array with a
 *     non-zero count, an unknown or reused sequence id, a double free, a zero or huge size, an
 *     out-of-range layer or block, or an exhausted budget each gets its status.
 *     What cannot be detected: a handle that did not come from kvc_engine_create or was
 *     already destroyed, and an array shorter than its stated count (undefined behaviour,
 *     as with free() and memcpy()).
 *   - Every pointer argument must be non-NULL, except an input or output array whose count
 *     or capacity is 0 (where a function says so).
 *   - size_t counts larger than PTRDIFF_MAX are rejected as KVC_ERR_INVALID_ARGUMENT.
 *
 * THREAD SAFETY
 *   The engine is thread-safe: any number of threads may call any function concurrently on
 *   one engine, and calls on distinct sequences proceed in parallel. Calls naming the same
 *   sequence are serialised by the engine, but their order is whichever thread gets there
 *   first; a server that appends to and frees one sequence from two threads must order
 *   those itself. kvc_engine_destroy must not run concurrently with, or be followed by, any
 *   other call on that engine. kvc_config_init, kvc_status_name, kvc_last_error,
 *   kvc_abi_version, kvc_hash_tokens and kvc_router_config_init touch no engine and are always
 *   safe. Routers (below) have their own mutex.
 *
 * LAYOUTS (kvc_config.layout)
 *   Within one layer's K tensor (and likewise V) data is token-major,
 *   [token][kv_head][head_dim], dtype_bytes per element, so one token of one tensor takes
 *       token_bytes = num_kv_heads * head_dim * dtype_bytes
 *   and token t of a tensor starts at byte t * token_bytes of its range.
 *   - KVC_LAYOUT_PAGED (vLLM-style): per layer a K arena and a V arena of fixed blocks of
 *     block_tokens tokens; a block id is valid in every layer. A sequence owns a block
 *     table: entry i holds its tokens i*block_tokens .. (i+1)*block_tokens-1.
 *     Use kvc_seq_block_table + kvc_block_kv. kvc_seq_kv returns KVC_ERR_UNSUPPORTED.
 *   - KVC_LAYOUT_CONTIGUOUS (vAttention-style): per sequence, layer and K|V one contiguous
 *     virtual range of max_seq_tokens * token_bytes, backed by physical pages as the
 *     sequence grows. Use kvc_seq_kv. kvc_seq_block_table and kvc_block_kv return
 *     KVC_ERR_UNSUPPORTED.
 *
 * WRITING K/V
 *   kvc_seq_create reports *cached_tokens: the leading tokens whose K/V are already present
 *   (shared with other sequences through the prefix cache). The server writes K/V only for
 *   tokens at positions >= *cached_tokens, and for each appended token after
 *   kvc_seq_append. It must never write below *cached_tokens of a sequence, nor into tokens
 *   a fork shares with its parent (positions < the parent's length at fork time): that
 *   memory may be shared. The engine copies a shared partial block before it lets a
 *   sequence append into it, so in the paged layout re-read the block table after
 *   kvc_seq_append and kvc_seq_fork.
 *
 * BLOCK HASH (version 1; fixed forever, a change gets a new name)
 *   One stable, seeded 64-bit hash of full blocks, shared by the engine (prefix index), the
 *   router and KV events, so that processes and machines agree on it:
 *
 *     SEED = 0x6b76636163686531                 ("kvcache1")
 *     P1   = 0x9E3779B185EBCA87
 *     P2   = 0xC2B2AE3D27D4EB4F
 *     block_hash(parent, tokens[0..n-1]):
 *       h = parent ^ SEED ^ (n * P1)
 *       for each token t:                       t read as its 32-bit two's-complement pattern,
 *         x = h ^ ((uint64_t)(uint32_t)t * P2)  zero-extended to 64 bits
 *         h = rotl64(x, 31) * P1                rotl64(x, r) = (x << r) | (x >> (64 - r))
 *       return fmix64(h)
 *     fmix64(h):                                MurmurHash3's 64-bit finalizer
 *       h ^= h >> 33; h *= 0xFF51AFD7ED558CCD;
 *       h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53;
 *       h ^= h >> 33; return h
 *     chain: block i covers tokens i*block_tokens .. (i+1)*block_tokens-1; the parent of
 *     block 0 is 0, the parent of block i is the hash of block i-1.
 *
 *   All arithmetic is on uint64_t and wraps modulo 2^64. Only full blocks are hashed: a
 *   chain of k hashes covers the first k*block_tokens tokens. The result does not depend on
 *   the process, machine or byte order. Cost: one multiply-rotate-multiply per token.
 *
 * ERRORS (kvc_status)
 *   KVC_ERR_INVALID_ARGUMENT  a NULL pointer, a zero/negative/huge size, a bad config field,
 *                             a struct_size below the minimum, a layer or block out of range,
 *                             a sequence that would exceed max_seq_tokens
 *   KVC_ERR_NOT_FOUND         the sequence id is not live (never created, or freed)
 *   KVC_ERR_EXISTS            the sequence id is already live
 *   KVC_ERR_OUT_OF_MEMORY     memory_bytes (or the address space / mapping limit) cannot
 *                             hold it; nothing was allocated. Free or swap out a sequence.
 *   KVC_ERR_BUFFER_TOO_SMALL  an output array is shorter than the result; the full count is
 *                             returned and the prefix that fits is written
 *   KVC_ERR_IO                a disk-tier read or write failed
 *   KVC_ERR_UNSUPPORTED       the call does not apply to this engine's layout, or a config
 *                             sets a field this library does not know
 *   KVC_ERR_INTERNAL          a bug in the library; the message says where
 */
#ifndef KVCACHE_H
#define KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of this ABI; kvc_abi_version() returns the library's. Bumped only when an
 *  existing function or field changes meaning (appending fields or functions does not). */
#define KVC_ABI_VERSION 1

/** An engine. Opaque; obtained from kvc_engine_create, released by kvc_engine_destroy. */
typedef struct kvc_engine kvc_engine;

/** 0 on success, a negative KVC_ERR_* code on failure. */
typedef int32_t kvc_status;

#define KVC_OK                     0
#define KVC_ERR_INVALID_ARGUMENT (-1)
#define KVC_ERR_NOT_FOUND        (-2)
#define KVC_ERR_EXISTS           (-3)
#define KVC_ERR_OUT_OF_MEMORY    (-4)
#define KVC_ERR_BUFFER_TOO_SMALL (-5)
#define KVC_ERR_IO               (-6)
#define KVC_ERR_UNSUPPORTED      (-7)
#define KVC_ERR_INTERNAL         (-8)

/** kvc_config.layout values; see LAYOUTS above. */
enum { KVC_LAYOUT_PAGED = 0, KVC_LAYOUT_CONTIGUOUS = 1 };

/** kvc_event.kind values, with the meaning of vLLM's KV events. */
enum {
    /** A full block entered the prefix index of `tier`. */
    KVC_EVENT_BLOCK_STORED = 1,
    /** A block left the prefix index of `tier` (evicted, or dropped by kvc_engine_trim). */
    KVC_EVENT_BLOCK_REMOVED = 2,
    /** Every block of `tier` left the index at once; both hashes are 0. */
    KVC_EVENT_ALL_CLEARED = 3
};

/**
 * The engine's shape and limits. Always start from kvc_config_init, then set fields.
 *
 * Forward compatibility: struct_size says how many bytes the caller's struct has.
 * - struct_size < KVC_CONFIG_MIN_SIZE (including 0): KVC_ERR_INVALID_ARGUMENT.
 * - A smaller struct than this header's (an older caller): fields that do not fit get
 *   their kvc_config_init defaults.
 * - A larger struct (a newer caller): accepted when every byte past the fields this library
 *   knows is 0 (fields added later use 0 for "as before"); a non-zero byte there is
 *   KVC_ERR_UNSUPPORTED, since the library cannot honour a setting it does not know.
 *   struct_size above KVC_STRUCT_SIZE_MAX is KVC_ERR_INVALID_ARGUMENT (not a kvc_config).
 */
typedef struct kvc_config {
    /** Bytes of this struct as the caller compiled it: sizeof(kvc_config). */
    uint32_t struct_size;
    /** Transformer layers, 1..1024. Default 32. */
    uint32_t num_layers;
    /** Key/value heads per layer, 1..1024. Default 8. */
    uint32_t num_kv_heads;
    /** Elements per head, 1..4096. Default 128. */
    uint32_t head_dim;
    /** Bytes per element: 1, 2, 4 or 8. Default 2 (fp16/bf16). */
    uint32_t dtype_bytes;
    /** Tokens per block, 1..65536: the unit of prefix caching (both layouts) and of
     *  allocation (paged). Default 16. */
    uint32_t block_tokens;
    /** KVC_LAYOUT_PAGED (default) or KVC_LAYOUT_CONTIGUOUS. */
    uint32_t layout;
    /** Live sequences at most, 1..65536. Default 256. */
    uint32_t max_seqs;
    /** Tokens one sequence may hold at most, 1..16777216. Default 32768. */
    uint32_t max_seq_tokens;
    /* 4 bytes of padding (offset 36) */
    /** Exact physical budget for K/V bytes, > 0; the engine never commits more. Default 8 GiB. */
    uint64_t memory_bytes;
    /** Physical page size: a power of two from 4096 to 2097152 (2 MiB asks for huge pages).
     *  Default 65536. */
    uint64_t page_bytes;
    /** NUMA node to bind K/V memory to, or -1 (default) for the default policy. */
    int32_t numa_node;
    /** 1: metadata only — the prefix index, LRU, events and block accounting are real but
     *  no memory is mapped and kvc_block_kv returns KVC_ERR_UNSUPPORTED (for simulators).
     *  Paged layout only. 0 (default): normal engine. Added after the first draft; an older
     *  caller's struct ends before it and gets 0. */
    uint32_t metadata_only;
    /* more may follow */
} kvc_config;

/** The smallest kvc_config.struct_size accepted: the struct up to and including numa_node. */
#define KVC_CONFIG_MIN_SIZE (offsetof(kvc_config, numa_node) + sizeof(int32_t))

/**
 * A consistent snapshot of the engine's counters (all taken under one lock).
 *
 * Invariants: committed_bytes <= budget_bytes; blocks_used + blocks_cached <= blocks_total;
 * prefix_hit_tokens <= prefix_query_tokens.
 *
 * Forward compatibility: set struct_size = sizeof(kvc_stats) before the call.
 * - struct_size < KVC_STATS_MIN_SIZE (including 0): KVC_ERR_INVALID_ARGUMENT.
 * - A smaller struct (an older caller): only the fields that fit entirely are written.
 * - A larger struct (a newer caller): every known field is written and the bytes past them
 *   up to struct_size are set to 0. Above KVC_STRUCT_SIZE_MAX: KVC_ERR_INVALID_ARGUMENT.
 * struct_size itself is never written.
 */
typedef struct kvc_stats {
    /** Bytes of this struct as the caller compiled it: sizeof(kvc_stats). Input only. */
    uint32_t struct_size;
    /** The exact physical budget, memory_bytes. */
    uint64_t budget_bytes;
    /** Physical bytes the engine holds now (allocated pages of its pool). */
    uint64_t committed_bytes;
    /** Blocks of block_tokens tokens the budget can hold (logical blocks in the contiguous
     *  layout). */
    uint64_t blocks_total;
    /** Blocks referenced by live sequences (a block shared by several counts once). */
    uint64_t blocks_used;
    /** Blocks held only by the prefix index (reusable on a hit, evicted in LRU order). */
    uint64_t blocks_cached;
    /** Live sequences. */
    uint64_t sequences;
    /** Prompt tokens looked up in the prefix index by kvc_seq_create, in total. */
    uint64_t prefix_query_tokens;
    /** Of those, tokens served from the index. */
    uint64_t prefix_hit_tokens;
    /* -- fields past KVC_STATS_MIN_SIZE: written when struct_size covers them -- */
    /** Sequences created since the engine started (including freed ones). */
    uint64_t sequences_created;
    /** Cached blocks evicted from memory to make room, since the engine started. */
    uint64_t blocks_evicted;
    /** Memory mappings the engine holds, an upper bound (contiguous layout; 0 when paged).
     *  Compare with vm.max_map_count. */
    uint64_t mappings;
    /** Events dropped because they were not drained in time (the queue is bounded). */
    uint64_t events_dropped;
    /* more may follow */
} kvc_stats;

/** The smallest kvc_stats.struct_size accepted: the struct up to and including
 *  prefix_hit_tokens. */
#define KVC_STATS_MIN_SIZE (offsetof(kvc_stats, prefix_hit_tokens) + sizeof(uint64_t))

/** Largest struct_size accepted for kvc_config and kvc_stats; larger is taken to be garbage. */
#define KVC_STRUCT_SIZE_MAX 4096u

/** One change to the prefix cache. 24 bytes, no padding. */
typedef struct kvc_event {
    /** KVC_EVENT_BLOCK_STORED, KVC_EVENT_BLOCK_REMOVED or KVC_EVENT_ALL_CLEARED. */
    uint32_t kind;
    /** Storage tier: 0 is memory (the only tier so far). */
    uint32_t tier;
    /** Block hash of the block (see BLOCK HASH); 0 for KVC_EVENT_ALL_CLEARED. */
    uint64_t block_hash;
    /** Block hash of its parent block; 0 for the first block of a chain and for
     *  KVC_EVENT_ALL_CLEARED. */
    uint64_t parent_hash;
} kvc_event;

/* ---------------------------------------------------------------------------------------
 * Library
 * --------------------------------------------------------------------------------------- */

/** Returns KVC_ABI_VERSION of the library (compare with the header's at start-up).
 *  Pure, thread-safe. */
uint32_t kvc_abi_version(void);

/** Returns a static, NUL-terminated name for `s`: "KVC_OK", "KVC_ERR_INVALID_ARGUMENT", ...,
 *  and "KVC_ERR_UNKNOWN" for any other value. Never NULL; never freed. Thread-safe. */
const char *kvc_status_name(kvc_status s);

/** Returns the message of the calling thread's most recent failed call, or "" if it has had
 *  none. Never NULL. The string belongs to the thread (at most 511 bytes, longer messages are
 *  cut at a UTF-8 boundary) and stays valid until the thread's next failed call or its exit.
 *  Successful calls leave it unchanged. Thread-safe: each thread sees only its own. */
const char *kvc_last_error(void);

/* ---------------------------------------------------------------------------------------
 * Engine
 * --------------------------------------------------------------------------------------- */

/** Writes the defaults listed in kvc_config to *cfg and sets cfg->struct_size =
 *  sizeof(kvc_config) (writes sizeof(kvc_config) bytes, padding zeroed). NULL: no-op.
 *  Thread-safe. */
void kvc_config_init(kvc_config *cfg);

/**
 * Creates an engine shaped by *cfg and stores its handle in *out.
 * Reserves the virtual address space of the layout up front (MAP_NORESERVE: no physical
 * memory until sequences need it); cost grows with max_seqs * num_layers (contiguous).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL cfg/out, bad struct_size, a field out of range —
 * the message names it), KVC_ERR_UNSUPPORTED (a non-zero unknown field), or
 * KVC_ERR_OUT_OF_MEMORY (address space or vm.max_map_count cannot fit the configuration).
 * On failure *out is set to NULL (when out is not NULL).
 */
kvc_status kvc_engine_create(const kvc_config *cfg, kvc_engine **out);

/** Releases the engine and all its memory; every pointer it returned becomes invalid.
 *  NULL: no-op. Must not race with any other call on `e`; `e` must not be used after. */
void kvc_engine_destroy(kvc_engine *e);

/**
 * Returns every physical page not holding live-sequence data to the OS. Cached prefix
 * blocks are dropped (each reported as KVC_EVENT_BLOCK_REMOVED, or one
 * KVC_EVENT_ALL_CLEARED), so later prompts miss the cache until it refills.
 * Live sequences' bytes are untouched. Cost: one madvise/fallocate per released range.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e).
 */
kvc_status kvc_engine_trim(kvc_engine *e);

/** Writes a snapshot of the counters to *out, honouring out->struct_size (see kvc_stats).
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL e/out, struct_size out of range). Cheap. */
kvc_status kvc_engine_stats(kvc_engine *e, kvc_stats *out);

/**
 * Moves up to `capacity` pending events, oldest first, into out[0 .. *n_events-1]; drained
 * events are gone. Call it regularly: the queue is bounded and, when full, drops new events
 * (counted in kvc_stats.events_dropped). *n_events < capacity means the queue is now empty.
 * `out` may be NULL only when capacity is 0 (then *n_events = 0).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_events, NULL out with capacity > 0).
 */
kvc_status kvc_drain_events(kvc_engine *e, kvc_event *out, size_t capacity, size_t *n_events);

/* ---------------------------------------------------------------------------------------
 * Sequences (both layouts)
 * --------------------------------------------------------------------------------------- */

/**
 * Creates sequence `seq` holding the prompt tokens[0 .. n_tokens-1] (n_tokens >= 1) and
 * commits memory for all of them. Full blocks of the prompt found in the prefix index are
 * shared instead of allocated; *cached_tokens receives how many leading tokens are already
 * cached (a multiple of block_tokens, at most n_tokens - 1). The server computes and writes
 * K/V for the tokens from *cached_tokens on.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/tokens/cached_tokens, n_tokens 0 or
 * > max_seq_tokens),
 * KVC_ERR_EXISTS (seq is live), KVC_ERR_OUT_OF_MEMORY (budget or max_seqs; nothing created).
 * Cost: one hash per prompt token plus the page commits.
 */
kvc_status kvc_seq_create(kvc_engine *e, uint64_t seq, const int32_t *tokens, size_t n_tokens,
                          size_t *cached_tokens);

/**
 * Appends tokens[0 .. n_tokens-1] to `seq` (decode) and commits their memory; the server
 * then writes their K/V. n_tokens 0 is a no-op returning KVC_OK (tokens may then be NULL).
 * A block that becomes full enters the prefix index (KVC_EVENT_BLOCK_STORED).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, NULL tokens with n_tokens > 0, length would
 * exceed max_seq_tokens), KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY (nothing appended).
 */
kvc_status kvc_seq_append(kvc_engine *e, uint64_t seq, const int32_t *tokens, size_t n_tokens);

/**
 * Creates `child` holding all of `parent`'s tokens, sharing their memory copy-on-write
 * (beam search, parallel sampling). Both then grow independently.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e), KVC_ERR_NOT_FOUND (parent not live),
 * KVC_ERR_EXISTS (child live, or child == parent), KVC_ERR_OUT_OF_MEMORY.
 */
kvc_status kvc_seq_fork(kvc_engine *e, uint64_t parent, uint64_t child);

/**
 * Frees `seq`: its id may be reused at once; its full blocks stay in the prefix index
 * (LRU) for later prompts, the rest of its memory returns to the pool. Pointers and block
 * ids obtained for it become invalid.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e), KVC_ERR_NOT_FOUND (not live; also a double free).
 */
kvc_status kvc_seq_free(kvc_engine *e, uint64_t seq);

/** Stores the number of tokens `seq` holds in *n_tokens.
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_tokens), KVC_ERR_NOT_FOUND. */
kvc_status kvc_seq_length(kvc_engine *e, uint64_t seq, size_t *n_tokens);

/* ---------------------------------------------------------------------------------------
 * K/V memory
 * --------------------------------------------------------------------------------------- */

/**
 * KVC_LAYOUT_CONTIGUOUS: stores the base of `seq`'s K and V ranges for `layer` in *k and *v.
 * Token t is at byte t * token_bytes; bytes of tokens below kvc_seq_length are backed.
 * The pointers stay valid until `seq` is freed or the engine destroyed (appends never move
 * them).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/k/v, layer >= num_layers), KVC_ERR_NOT_FOUND,
 * KVC_ERR_UNSUPPORTED (paged layout).
 */
kvc_status kvc_seq_kv(kvc_engine *e, uint64_t seq, uint32_t layer, void **k, void **v);

/**
 * KVC_LAYOUT_PAGED: writes `seq`'s block ids into blocks[0 .. min(capacity, count)-1] and
 * the full count, ceil(length / block_tokens), into *n_blocks. Entry i holds the sequence's
 * tokens i*block_tokens ..; ids are valid in every layer (see kvc_block_kv).
 * When capacity < count: the first `capacity` ids are written, *n_blocks is the full count,
 * and the call returns KVC_ERR_BUFFER_TOO_SMALL. `blocks` may be NULL only when capacity is
 * 0 (a size query: KVC_ERR_BUFFER_TOO_SMALL with the count).
 * The table changes on kvc_seq_append (new blocks; a shared last block is copied) and
 * kvc_seq_fork: re-read it after those.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_blocks, NULL blocks with capacity > 0),
 * KVC_ERR_NOT_FOUND, KVC_ERR_UNSUPPORTED (contiguous layout), KVC_ERR_BUFFER_TOO_SMALL.
 */
kvc_status kvc_seq_block_table(kvc_engine *e, uint64_t seq, int32_t *blocks, size_t capacity,
                               size_t *n_blocks);

/**
 * KVC_LAYOUT_PAGED: stores the base of block `block`'s K and V in `layer` in *k and *v;
 * token i of the block is at byte i * token_bytes (block_tokens * token_bytes bytes each).
 * Valid while the block belongs to a live sequence that holds it (see kvc_seq_block_table).
 * Cheap (arithmetic); call it per block per layer.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/k/v, block < 0 or >= blocks_total,
 * layer >= num_layers), KVC_ERR_UNSUPPORTED (contiguous layout, metadata-only engine).
 */
kvc_status kvc_block_kv(kvc_engine *e, int32_t block, uint32_t layer, void **k, void **v);

/* ---------------------------------------------------------------------------------------
 * Hashing (no engine)
 * --------------------------------------------------------------------------------------- */

/**
 * Computes the chained block hashes (see BLOCK HASH) of every full block of
 * tokens[0 .. n_tokens-1]: *n_hashes = n_tokens / block_tokens, written to
 * hashes[0 .. min(capacity, *n_hashes)-1]. When capacity < *n_hashes the hashes that fit
 * are written and the call returns KVC_ERR_BUFFER_TOO_SMALL. `hashes` may be NULL only when
 * capacity is 0; `tokens` only when n_tokens is 0.
 * Returns KVC_ERR_INVALID_ARGUMENT (block_tokens 0, NULL n_hashes, NULL tokens or hashes
 * with a non-zero count), KVC_ERR_BUFFER_TOO_SMALL. Pure and thread-safe;
 * one multiply-rotate-multiply per token of the full blocks.
 */
kvc_status kvc_hash_tokens(const int32_t *tokens, size_t n_tokens, uint32_t block_tokens,
                           uint64_t *hashes, size_t capacity, size_t *n_hashes);

/* ---------------------------------------------------------------------------------------
 * Router (gateway side): which instance should serve a request
 *
 * A router spreads requests over serving instances by their prompt's chained block hashes
 * (kvc_hash_tokens, or the engine's events' hashes), from what it knows of each instance:
 * its load (kvc_router_report; the router also advances it on every decision), and what it
 * caches, either exactly from the instance's KV events (kvc_router_observe_events, drained
 * with kvc_drain_events) or approximately from the router's own routing history.
 *
 * Policies (kvc_router_config.policy):
 *   KVC_ROUTER_DUALMAP          two consistent-hash rings keyed on the hash of the first
 *                               key_blocks blocks give two distinct candidates; take the one
 *                               caching the longer prefix unless its estimated TTFT exceeds
 *                               ttft_slo_ms / 2, then the one with the lower estimate.
 *                               Estimated TTFT = (pending prefill tokens + this request's
 *                               uncached tokens) x prefill_ms_per_token.
 *   KVC_ROUTER_ROUND_ROBIN      cycle over instances.
 *   KVC_ROUTER_LEAST_LOADED     fewest pending prefill tokens.
 *   KVC_ROUTER_CONSISTENT_HASH  one ring over the key; ignores load.
 *   KVC_ROUTER_PREFIX_TREE      SGLang router's cache-aware policy (match ratio > 0.5 wins,
 *                               least in-flight requests when imbalanced by > 32 and x1.1).
 *   KVC_ROUTER_OVERLAP_COST     Dynamo KV router: min of prefill blocks + active blocks.
 *
 * A router holds at most 64 instances, identified by caller-chosen uint32_t ids. Routing
 * with no instance is KVC_ERR_NOT_FOUND; a request needs at least one block hash
 * (n_blocks 0 is KVC_ERR_INVALID_ARGUMENT: hash prompts shorter than a block yourself, or
 * route them with any policy of your own). Unknown or removed instance ids in
 * report/observe/remove are KVC_ERR_NOT_FOUND; adding an id twice is KVC_ERR_EXISTS.
 * Thread-safe: calls on one router are serialised by its mutex. The same failure rules as
 * the engine's apply: on failure nothing changed and kvc_last_error() says why.
 * --------------------------------------------------------------------------------------- */

/** A router. Opaque; from kvc_router_create, released by kvc_router_destroy. */
typedef struct kvc_router kvc_router;

/** kvc_router_config.policy values. */
enum {
    KVC_ROUTER_DUALMAP = 0,
    KVC_ROUTER_ROUND_ROBIN = 1,
    KVC_ROUTER_LEAST_LOADED = 2,
    KVC_ROUTER_CONSISTENT_HASH = 3,
    KVC_ROUTER_PREFIX_TREE = 4,
    KVC_ROUTER_OVERLAP_COST = 5
};

/** kvc_router_config.view values: how the router learns what instances cache. */
enum {
    /** The policy's own: approximate for PREFIX_TREE (as SGLang), exact for the others. */
    KVC_ROUTER_VIEW_DEFAULT = 0,
    /** From KV events passed to kvc_router_observe_events. */
    KVC_ROUTER_VIEW_EXACT = 1,
    /** From the router's own decisions (events are ignored). */
    KVC_ROUTER_VIEW_APPROXIMATE = 2
};

/**
 * A router's parameters; start from kvc_router_config_init. struct_size follows the rules of
 * kvc_config (smaller: later fields default; larger: extra bytes must be 0).
 */
typedef struct kvc_router_config {
    /** sizeof(kvc_router_config). */
    uint32_t struct_size;
    /** A KVC_ROUTER_* policy. Default KVC_ROUTER_DUALMAP. */
    uint32_t policy;
    /** The request key hashes the first key_blocks blocks, 1..64. Default 2. */
    uint32_t key_blocks;
    /** Ring positions per instance of weight 1, 1..4096. Default 128. */
    uint32_t virtual_nodes;
    /** TTFT SLO in ms, > 0; DualMap leaves the affinity candidate above half of it. Default 5000. */
    double ttft_slo_ms;
    /** Starting estimate of prefill ms per uncached token, > 0. Default 0.1. */
    double prefill_ms_per_token;
    /* -- fields past KVC_ROUTER_CONFIG_MIN_SIZE -- */
    /** Tokens per block of the hashes given to kvc_router_route, 1..65536. Default 16. */
    uint32_t block_tokens;
    /** A KVC_ROUTER_VIEW_* value. Default KVC_ROUTER_VIEW_DEFAULT. */
    uint32_t view;
    /* more may follow */
} kvc_router_config;

/** The smallest kvc_router_config.struct_size accepted: through prefill_ms_per_token. */
#define KVC_ROUTER_CONFIG_MIN_SIZE (offsetof(kvc_router_config, prefill_ms_per_token) + sizeof(double))

/** An instance's load, as it reports it. struct_size rules as kvc_config (read only). */
typedef struct kvc_instance_load {
    /** sizeof(kvc_instance_load). */
    uint32_t struct_size;
    /** Prompt tokens queued or being prefilled that were not cached. */
    uint64_t pending_prefill_tokens;
    /** KV blocks held by running sequences. */
    uint64_t running_blocks;
    /** KV blocks free or evictable. */
    uint64_t free_blocks;
    /* -- fields past KVC_INSTANCE_LOAD_MIN_SIZE -- */
    /** Requests queued or running. */
    uint64_t active_requests;
    /* more may follow */
} kvc_instance_load;

/** The smallest kvc_instance_load.struct_size accepted: through free_blocks. */
#define KVC_INSTANCE_LOAD_MIN_SIZE (offsetof(kvc_instance_load, free_blocks) + sizeof(uint64_t))

/** Writes the defaults to *cfg and sets struct_size (padding zeroed). NULL: no-op. */
void kvc_router_config_init(kvc_router_config *cfg);

/** Creates a router with no instances. Returns KVC_ERR_INVALID_ARGUMENT (NULL cfg/out, bad
 *  struct_size or field; the message names it), KVC_ERR_UNSUPPORTED (unknown non-zero
 *  field). *out is NULL on failure. */
kvc_status kvc_router_create(const kvc_router_config *cfg, kvc_router **out);

/** Releases the router. NULL: no-op. Must not race with other calls on `r`. */
void kvc_router_destroy(kvc_router *r);

/** Adds instance `instance` with `weight` (share of ring positions, (0, 64]; 1 standard).
 *  Its load starts at 0 and its cache empty. Returns KVC_ERR_EXISTS (already added),
 *  KVC_ERR_INVALID_ARGUMENT (NULL r, weight, 64 instances already). Cost: rebuilds the rings. */
kvc_status kvc_router_add_instance(kvc_router *r, uint32_t instance, double weight);

/** Removes `instance`: no later decision picks it; what it cached is forgotten. Keys it
 *  owned move to ring neighbours, other keys stay. Returns KVC_ERR_NOT_FOUND. */
kvc_status kvc_router_remove_instance(kvc_router *r, uint32_t instance);

/**
 * Picks the instance for a prompt of n_tokens tokens whose chained block hashes are
 * block_hashes[0 .. n_blocks-1] (full blocks; a trailing partial block's hash may be
 * included), stores its id in *instance, and advances that instance's load by the request
 * until the next kvc_router_report. Returns KVC_ERR_INVALID_ARGUMENT (NULL r/instance,
 * NULL block_hashes, n_blocks 0, n_tokens 0), KVC_ERR_NOT_FOUND (no instance).
 * Cost: about one hash-table probe per cached block plus two ring lookups; no allocation.
 */
kvc_status kvc_router_route(kvc_router *r, const uint64_t *block_hashes, size_t n_blocks,
                            size_t n_tokens, uint32_t *instance);

/** Replaces `instance`'s load with *load. Returns KVC_ERR_INVALID_ARGUMENT (NULL r/load,
 *  struct_size out of range), KVC_ERR_UNSUPPORTED (unknown non-zero field),
 *  KVC_ERR_NOT_FOUND (unknown or removed instance). */
kvc_status kvc_router_report(kvc_router *r, uint32_t instance, const kvc_instance_load *load);

/** Applies `instance`'s KV events, in the order kvc_drain_events returned them, to the exact
 *  cache view (ignored by an approximate view). Every event's kind is checked before any is
 *  applied. `events` may be NULL only when n_events is 0. Returns KVC_ERR_INVALID_ARGUMENT
 *  (NULL r, NULL events with n_events > 0, an unknown kind), KVC_ERR_NOT_FOUND. */
kvc_status kvc_router_observe_events(kvc_router *r, uint32_t instance, const kvc_event *events,
                                     size_t n_events);

/** Calibrates the TTFT estimate: a prefill of n_tokens uncached tokens (any instance) took
 *  `milliseconds`. The router keeps an exponentially decayed ratio of milliseconds to tokens
 *  (starting from prefill_ms_per_token), so long prompts weigh by their size. Returns
 *  KVC_ERR_INVALID_ARGUMENT (NULL r, n_tokens 0, milliseconds not a positive number). */
kvc_status kvc_router_observe_prefill(kvc_router *r, size_t n_tokens, double milliseconds);

#ifdef __cplusplus
}
#endif

#endif /* KVCACHE_H */
