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
 *   - On failure the engine's observable state is unchanged (no sequence, block, cached prefix or
 *     statistic differs from before the call) and output pointers are left untouched, except where
 *     a function documents otherwise (the BUFFER_TOO_SMALL counts, kvc_engine_create's and
 *     kvc_router_create's *out, set to NULL). With a disk tier, one exception: a call that
 *     processes completed disk requests (see COMPLETIONS) and then fails with KVC_ERR_OUT_OF_MEMORY
 *     (kvc_seq_create, which processes them before its lookup; an allocation that found no room
 *     while swap-outs or freed sequences' reads were pending, which waits for them), or with
 *     KVC_ERR_IO because one of those completions was a failed read of the sequence it names (a
 *     call that waits for the sequence's reads first: kvc_seq_compact, a swap-out, a contiguous
 *     fork, an append that copies a block), has applied those earlier requests' outcomes, as the
 *     next such call would have: their counters, events and effects (a settled swap-out's memory
 *     released, a block whose read failed gone from the index), nothing of its own.
 *   - On failure kvc_last_error() returns a message for the calling thread naming the call,
 *     its key arguments and the offending value, e.g.
 *     "kvc_seq_append(seq 7, n_tokens 1): appending 1 tokens needs 1 blocks, 0 are available".
 *     Successful calls do not clear it (like errno).
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
 *   The engine is thread-safe: any number of threads may call any function on one engine at
 *   the same time, for the same or distinct sequences, without corrupting anything. Each call
 *   takes the engine's one lock for its bookkeeping (no K/V copy except the one block or page
 *   a copy-on-write needs; the disk tier's exceptions are documented under DISK TIER and at
 *   the calls: spills copy and checksum their blocks into staging buffers under the lock,
 *   and so do the calls that submit a kvc_seq_swap_out_async's later blocks as completions
 *   free buffers. kvc_seq_swap_out copies all of its sequence's blocks without it,
 *   kvc_seq_swap_out_async those it submits itself, kvc_engine_sync fdatasyncs without it),
 *   so calls are short and run
 *   one after another. A call that works in steps (kvc_engine_trim, kvc_engine_reserve, and
 *   every wait for the disk, see COMPLETIONS) hands the lock, between steps, to the calls
 *   blocked on it, which run before its next step. Reading and writing K/V through the pointers
 *   the engine returns takes no lock: threads working on distinct sequences do that fully in
 *   parallel. Calls naming the same sequence from two threads run in whichever order the
 *   threads reach the lock; a server that appends to and frees one sequence from two threads
 *   must order those itself, and finish its K/V reads and writes of a sequence before
 *   another thread's free, abort, truncate, compact or swap-out of it: the engine cannot see
 *   a write through a stale pointer or block id, which then lands in whatever sequence holds
 *   that memory next. kvc_engine_destroy must not run concurrently with, or be
 *   followed by, any other call on that engine. kvc_config_init, kvc_status_name,
 *   kvc_last_error, kvc_abi_version, kvc_hash_tokens(_salted) and kvc_router_config_init
 *   (and their _size forms) touch no engine and are always safe. Routers (below) have their own mutex.
 *
 * PROCESSES
 *   An engine or router belongs to the process that created it. The process may fork():
 *   its engines keep serving, I/O in flight at the fork included, while the child lives and
 *   after it exits (tools/abi_client.c, "forks"). In the child, an inherited engine is the
 *   parent's: every kvc_* call on it returns KVC_ERR_INVALID_ARGUMENT, the message naming
 *   the creating process ("engine of process 1234, inherited through fork()"; one compare per
 *   call), except kvc_engine_destroy, which a child may call (a Python worker's __del__ or
 *   atexit): there it only unmaps the child's K/V mappings and closes its copy of the memory
 *   file, and leaves everything else (the file's pages, the lock, the io_uring ring, the
 *   disk tier's files and journal, the threads, which a child does not have) to the parent,
 *   which keeps serving. (The engine's metadata, a copy-on-write copy in the child, is not
 *   freed: it goes when the child exits or execs.) Inherited routers must not be used. K/V
 *   memory is shared, not copied: a child that writes through an inherited K/V pointer
 *   writes the parent's cache. The parent's kvc_engine_destroy releases that memory at once
 *   even while such a child lives (the K/V file is cut to 0 bytes): a child that touches an
 *   inherited K/V pointer after that gets SIGBUS. Besides the K/V memory file's (closed by the
 *   child's kvc_engine_destroy, exit or exec), the descriptors an engine holds are closed in
 *   the child at the fork: the disk tier's (its slab, journal and lock, a journal
 *   compaction's kvcache.journal.new, a kvc_engine_sync's copy of the journal, the identity
 *   file while read or written, each peer's slab and journal) and the io_uring ring and its
 *   eventfd; a fork() waits for an engine's open in another thread to register its
 *   descriptor, and for its close to end once it unregistered one, so none escapes in
 *   between. (A file of /proc or /sys that an engine reads for an instant, a setting or its
 *   mapping count, may stay open in a child forked then, until it exits or execs: every file
 *   an engine opens is close-on-exec, so no program exec'd or spawned gets one.)
 *   Its I/O buffers and ring are not mapped there (MADV_DONTFORK). So a child holds none of
 *   the tier's files or locks and a fork copies none of its buffers. As with any library that
 *   runs threads, a child of a multi-threaded parent should exec (or use posix_spawn) before
 *   creating engines of its own.
 *
 * LOADING
 *   libkvcache.so is linked with -z nodelete: a plugin host's dlclose leaves it loaded (its
 *   thread-specific data and runtime state stay), so a host may dlopen and dlclose it any
 *   number of times, each dlopen finding the library as the last left it. Its functions carry
 *   symbol versions: every function of this ABI's first release is in version node KVC_1.0
 *   (include/kvcache.map); functions added later go into new nodes (KVC_1.1, ...), so a
 *   program that calls one records that node and is refused at start-up by an older library
 *   without it ("version `KVC_1.1' not found"), instead of failing at its first call.
 *   KVC_1.1: the numbered event streams (kvc_drain_events_seq, kvc_engine_index_events_seq,
 *   kvc_router_observe_events_seq, kvc_router_resync_instance).
 *   KVC_1.2: the router's statistics (kvc_router_get_stats), a paged layer's blocks as
 *   arrays (kvc_layer_kv_layout) and chunked admission (kvc_prefix_lookup,
 *   kvc_seq_create_chunked).
 *   KVC_1.3: batched decode-step calls (kvc_seq_append_batch, kvc_seq_block_tables).
 *   KVC_1.4: a create's dry run for admission (kvc_prefix_admit).
 *   Signals: loading the library leaves the host's signal dispositions as they were. The
 *   Swift runtime it links installs a crash handler (a backtrace printer) for SIGQUIT,
 *   SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE and SIGSEGV when it loads; on those a process
 *   then printed a crash report instead of dying, and went on running when the signal came
 *   from another process (a watchdog's kill -ABRT) or from raise(SIGQUIT). A constructor of
 *   libkvcache.so puts each of them whose handler lies in the Swift runtime back to SIG_DFL,
 *   at start-up or at dlopen alike; handlers of the host's own (installed before or after)
 *   are never touched. To keep the runtime's backtraces, set SWIFT_BACKTRACE in the
 *   environment before loading (SWIFT_BACKTRACE=enable=yes): the library then leaves them.
 *   A host whose Swift runtime was loaded before (a Swift program) loses them too unless it
 *   sets SWIFT_BACKTRACE. tools/abi_signals.c checks this.
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
 *   kvc_seq_append, before the sequence is swapped out (a request preempted before its pass
 *   is aborted instead, see kvc_seq_swap_out). It must never write below *cached_tokens of a
 *   sequence, nor into tokens a fork shares with its parent (positions < the parent's length
 *   at fork time): that memory may be shared. So fork a sequence only once its K/V below its
 *   length is written (its prefill done): the child has those bytes as they are at the fork
 *   (contiguous: the page holding the boundary is copied then). Only tokens below
 *   kvc_seq_length are backed by memory.
 *   When prefix blocks enter the index (so that later prompts hit them) depends on
 *   kvc_config.index_on_schedule:
 *   - 0 (default): a prompt's full blocks are indexed when the sequence is created (and a
 *     block when an append fills it), before the server has computed their K/V: write a
 *     sequence's K/V before another sequence that hits the same prefix reads it (in one
 *     batched forward pass, layer by layer, as vLLM does), and end a sequence whose K/V was
 *     not all written (a cancelled request) with kvc_seq_abort, not kvc_seq_free. With
 *     chunked prefill that is not enough: a request arriving between two chunks of a long
 *     prompt hits blocks a later chunk computes, and reads garbage if scheduled first.
 *     Nor is it when a prefill may not run after all: kvc_seq_abort takes the unwritten
 *     blocks out of the index, but sequences that hit them meanwhile keep them, and the
 *     engine cannot tell the server which those are. A server that chunks prefills, or
 *     preempts or cancels a request between its kvc_seq_create and its forward pass, should
 *     set index_on_schedule 1 (the default is 0, for servers that run every created prompt
 *     in their next pass).
 *   - 1 (index as scheduled, as vLLM's cache_blocks(request, num_computed_tokens +
 *     num_new_tokens)): kvc_seq_create shares hits as always (and indexes the blocks it
 *     finds in the disk tier) but indexes none of the prompt's new blocks; the server calls
 *     kvc_seq_schedule(seq, n) when it schedules the tokens below n for a forward pass, which
 *     indexes the full blocks below n, in order. A kvc_seq_append means everything before
 *     it was scheduled: it indexes the rest of the prompt's blocks first, then the blocks it
 *     fills, as in mode 0. A later prompt then hits only blocks that a forward pass no later
 *     than its own computes. Blocks never scheduled are never indexed: kvc_seq_free of a
 *     sequence scheduled only in part leaves the rest unindexed (kvc_seq_abort is still
 *     needed for blocks scheduled but not computed, e.g. a request cancelled before its
 *     scheduled pass ran). A fork child inherits the parent's unscheduled blocks (shared;
 *     whichever schedules one first indexes it; their K/V written before the fork, above).
 *     A kvc_seq_compact and a failed disk read (kvc_seq_ready's KVC_ERR_IO) end the
 *     schedule: the blocks not scheduled before are never indexed (their bytes moved, or
 *     follow a spoiled block). A kvc_seq_swap_out (or
 *     _async) keeps it: the unscheduled blocks go to disk as the sequence's own (no prompt
 *     finds their uncomputed bytes there), kvc_seq_swap_in reads them back unindexed, and
 *     once the sequence is ready the server resumes its prefill and schedules those tokens
 *     as before, which indexes them (kvc_seq_schedule of a swapped-out sequence is refused).
 *   Copy on write: a paged fork shares every block (reference counts) and whichever side
 *   first appends into the shared, partly filled last block gets a copy of it, so re-read
 *   the block table after kvc_seq_append and kvc_seq_fork. A contiguous fork maps the
 *   parent's whole pages into the child and copies the page holding the boundary at once,
 *   so kvc_seq_fork itself may return KVC_ERR_OUT_OF_MEMORY there; K/V written below the
 *   fork point afterwards through one side is not seen by the other in that page (another
 *   reason to write a prompt's K/V before forking it: a swap-out of the child would write
 *   its stale copy under the block's hash).
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
 *       v = fmix64(h)
 *       return v != 0 ? v : SEED                never 0: 0 is root(0) (no chain re-enters it)
 *     fmix64(h):                                MurmurHash3's 64-bit finalizer
 *       h ^= h >> 33; h *= 0xFF51AFD7ED558CCD;
 *       h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53;
 *       h ^= h >> 33; return h
 *     chain: block i covers tokens i*block_tokens .. (i+1)*block_tokens-1; the parent of
 *     block 0 is root(salt), the parent of block i is the hash of block i-1.
 *     root(salt) = fmix64(salt * P1): 0 without a salt (salt 0), non-zero and distinct for
 *     every other salt.
 *
 *   All arithmetic is on uint64_t and wraps modulo 2^64. Only full blocks are hashed: a
 *   chain of k hashes covers the first k*block_tokens tokens. The result does not depend on
 *   the process, machine or byte order. Cost: one multiply-rotate-multiply per token.
 *   A chained value is never 0 (a block whose fmix64 is 0, a 2^-64 chance for real tokens,
 *   hashes to SEED; since 2026-11-25), so no chain re-enters root(0): before, a crafted
 *   salted block of hash 0 made the next block hash like an unsalted prompt's first.
 *
 *   Not collision resistant: every round is a bijection of h and fmix64 is invertible, so a
 *   block of any chosen hash (a second preimage of a known block) is found in ~2^32 steps,
 *   and it is public. The engine therefore never serves K/V by this hash alone: it also
 *   keeps a private keyed fingerprint per block (SipHash-2-4 under a 128-bit key from the
 *   system's random generator, chained like the hash, salt included; never exported) and
 *   shares a cached block with a prompt only when the prompt's fingerprint matches, in
 *   memory, in the own disk tier (the key is kept in offload_dir/kvcache.identity, mode
 *   0600, so restarts verify) and in peers' tiers (each under its directory's key). A
 *   prompt whose block collides gets cached_tokens up to the block before and computes its
 *   own, which is then cached beside the other under the same hash (since 2026-11-25;
 *   before, the block indexed first stayed and the colliding one was never cached). So a
 *   crafted block, within a salt or across salts, can neither keep another prompt's blocks
 *   out of the cache (memory, disk tier, peers) nor tell by its own cached_tokens or
 *   latency whether another prompt's block is cached: its own hits depend on its own
 *   blocks only. What it can still do: share a public hash with another prompt's block in
 *   KV events (announced once per hash, docs/events.md), so a router, which sees only this
 *   hash, may route the crafted prompt (or the other) to an instance that holds only the
 *   other block: a misroute (a cache miss there), never bytes. (Sequences the Swift API
 *   creates from hashes alone, for simulators, carry no fingerprint: their lookups take
 *   any block of the hash, also one a prompt given by tokens cached, while a prompt given
 *   by tokens never takes theirs; their block is not indexed where its hash already is.)
 *
 *   Salt: equal tokens do not always mean equal K/V: another LoRA adapter, or a tenant whose
 *   cache must not be shared with others (vLLM's cache_salt), gives other K/V for the same
 *   prompt. kvc_seq_create_salted and kvc_hash_tokens_salted hash under a 64-bit salt the
 *   server chooses per adapter or tenant: every block of a salted chain differs from the
 *   unsalted chain's and from every other salt's, so prompts share blocks (in memory, on
 *   disk, in peers' tiers, in a router's view) only within one salt; salt 0 is the unsalted
 *   chain of kvc_seq_create and kvc_hash_tokens. Derive a tenant's salt with a keyed hash
 *   if tenants can choose it: the salt only separates chains, it is not a secret (the
 *   separation itself rests on the fingerprint, which covers the salt: a crafted prompt of
 *   one salt whose hash equals another salt's block is a miss, see above). The
 *   parent_hash a KV event carries for a chain's first block is 0, salted or not.
 *   Multimodal prompts: give each image's placeholder tokens ids derived from the image's
 *   content hash (as SGLang does), so that prompts with other images do not share blocks.
 *
 * ERRORS (kvc_status)
 *   KVC_ERR_INVALID_ARGUMENT  a NULL pointer, a zero/negative/huge size, a bad config field,
 *                             a struct_size below the minimum, a layer or block out of range,
 *                             a sequence that would exceed max_seq_tokens
 *   KVC_ERR_NOT_FOUND         the sequence id is not live (never created, or freed)
 *   KVC_ERR_EXISTS            the sequence id is already live
 *   KVC_ERR_OUT_OF_MEMORY     memory_bytes, max_seqs (or the address space) cannot hold
 *                             it (a sequence's eviction state, outside memory_bytes:
 *                             the process's memory, see TOKEN EVICTION), or the OS
 *                             refused to commit the memory (fallocate or populate
 *                             failed: ENOSPC, ENOMEM, EIO), in either layout;
 *                             nothing was allocated or changed (memory a call committed
 *                             before the refusal is given back: committed bytes are as
 *                             before). Free a sequence or stop
 *                             admitting new ones; the engine stays usable. At
 *                             kvc_engine_create also a process limit that refuses the
 *                             engine's memory file or metadata (RLIMIT_FSIZE, which memfd
 *                             files obey), or open files (EMFILE, ENFILE) at whichever
 *                             descriptor the create runs out: the memory file's, or a disk
 *                             tier's or peer's file, directory or I/O queue; or a thread
 *                             it cannot start (offload_writeback's, or the I/O thread
 *                             pool's where io_uring is unavailable: pthread_create failed,
 *                             a thread limit or a stack of RLIMIT_STACK that cannot be
 *                             mapped). The message names the cause and, for metadata, the
 *                             config fields that sized it. In the contiguous layout also
 *                             the mapping limit the process's engines share (see
 *                             kvc_stats.mappings): the message names vm.max_map_count and
 *                             the mappings they hold.
 *   KVC_ERR_BUFFER_TOO_SMALL  an output array is shorter than the result; the full count is
 *                             returned and the prefix that fits is written
 *   KVC_ERR_IO                a disk-tier read or write failed, or offload_dir is unusable
 *                             (missing, unwritable, or held by another engine)
 *   KVC_ERR_UNSUPPORTED       the call does not apply to this engine's layout, or a config
 *                             sets a field this library does not know, or the process's
 *                             environment refuses a system call the engine's memory needs
 *                             (EPERM, EACCES: a container's seccomp profile refusing
 *                             memfd_create, or mbind for numa_node without CAP_SYS_NICE;
 *                             the message names the call)
 *   KVC_ERR_INTERNAL          a bug in the library; the message says where
 */
#ifndef KVCACHE_H
#define KVCACHE_H

#include <stddef.h>
#include <stdint.h>

/* The ABI is LP64 (pointers and size_t 8 bytes; uint64_t, double and pointers 8-byte
 * aligned): the struct offsets this header states hold only there, and the library reads
 * them as stated. This typedef does not compile on another data model. A binding generator
 * that reads the preprocessed header as declarations but cannot evaluate sizeof (cffi's
 * cdef) defines KVC_NO_LP64_CHECK; its host must be LP64 all the same. For cffi's ABI mode:
 * ffi.cdef(output of `gcc -E -P -std=c99 -DKVC_NO_LP64_CHECK include/kvcache.h`), nothing
 * stripped (with -std=c99 glibc's <stddef.h> declares no max_align_t, which cffi cannot
 * parse); tools/cffi_check.py does that. */
#ifndef KVC_NO_LP64_CHECK
typedef char kvc_requires_lp64[(sizeof(void *) == 8 && sizeof(size_t) == 8) ? 1 : -1];
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The version of this ABI; kvc_abi_version() returns the library's. Bumped only when an
 *  existing function or field changes meaning (appending fields or functions does not), so
 *  it cannot tell a library older than this header: the symbol versions do (LOADING), and a
 *  struct's struct_size rules let either side be older. */
#define KVC_ABI_VERSION 1

/** An engine. Opaque; obtained from kvc_engine_create, released by kvc_engine_destroy. */
typedef struct kvc_engine kvc_engine;

/** 0 on success, a negative KVC_ERR_* code on failure. */
typedef int32_t kvc_status;

/** The kvc_status values, as enumerators for bindings that see no macros (cffi, ctypes
 *  generators, which read the preprocessed header), and as the #defines below for the
 *  preprocessor (#if); the same values. A kvc_status is an int32_t, never this enum. */
enum kvc_status_code {
    KVC_OK = 0,
    KVC_ERR_INVALID_ARGUMENT = -1,
    KVC_ERR_NOT_FOUND = -2,
    KVC_ERR_EXISTS = -3,
    KVC_ERR_OUT_OF_MEMORY = -4,
    KVC_ERR_BUFFER_TOO_SMALL = -5,
    KVC_ERR_IO = -6,
    KVC_ERR_UNSUPPORTED = -7,
    KVC_ERR_INTERNAL = -8
};

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

/** kvc_config.eviction_policy values; see TOKEN EVICTION. */
enum {
    KVC_EVICTION_NONE = 0,          /* keep everything: kvc_seq_compact changes nothing */
    KVC_EVICTION_STREAMING_LLM = 1, /* attention sinks + the most recent tokens */
    KVC_EVICTION_TOVA = 2,          /* the tokens the last observed query attended to most */
    KVC_EVICTION_HEAVY_HITTER = 3,  /* H2O: recent window + top accumulated attention; per
                                       layer by default, the paper's form per head (below) */
    KVC_EVICTION_EPISODIC = 4       /* EpiCache-style: H2O on the attention observed while
                                       the focused episode's turns ran (not the paper's
                                       per-episode prefill scoring; docs/token-eviction.md) */
};

/** kvc_event.kind values, with the meaning of vLLM's KV events. */
enum {
    /** A full block entered the prefix index of `tier`. */
    KVC_EVENT_BLOCK_STORED = 1,
    /** A block left the prefix index of `tier` (evicted, or dropped by kvc_engine_trim).
     *  Not announced when a live sequence's block of the same tokens takes its place
     *  (kvc_seq_append): the hash stays indexed. */
    KVC_EVENT_BLOCK_REMOVED = 2,
    /** Every block of `tier` left the index at once; both hashes are 0. Also an engine's
     *  first event (KVC_TIER_MEMORY, from kvc_engine_create: see there). */
    KVC_EVENT_ALL_CLEARED = 3
};

/** kvc_event.tier values: where the block is (vLLM's `medium`). */
enum {
    /** The engine's memory prefix index. It starts empty: kvc_engine_create's first event is
     *  KVC_EVENT_ALL_CLEARED of this tier. */
    KVC_TIER_MEMORY = 0,
    /** The engine's own disk tier (offload_dir; see DISK TIER, Events). Never a peer's
     *  (peer_offload_dirs): the engine owning that tier announces its blocks. */
    KVC_TIER_DISK = 1
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
 * - The reserved fields (reserved_36 and reserved_132, named by their offsets; padding in
 *   earlier versions of this header, same layout) must be 0 too, whatever struct_size: a
 *   later header may put a field there without changing the struct's size (as
 *   index_on_schedule did at 124, and event_capacity at 164), so a non-zero reserved byte is
 *   KVC_ERR_UNSUPPORTED.
 *   kvc_config_init zeroes them; zero (memset) a struct you build without it.
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
    /** Reserved (offset 36): must be 0. */
    uint32_t reserved_36;
    /** Exact physical budget for K/V bytes, > 0; the engine never commits more. Default 8 GiB.
     *  At most 2^24 blocks (of 2 * num_layers * block_tokens * token_bytes bytes each): a
     *  larger budget needs larger blocks (else KVC_ERR_INVALID_ARGUMENT). Contiguous layout:
     *  also at most 2^30 page groups (of 2 * num_layers * page_bytes), else
     *  KVC_ERR_INVALID_ARGUMENT: a larger budget needs larger pages. The engine uses it rounded
     *  down to whole page groups (a page, or a page-rounded run of blocks, of every one of the
     *  2 * num_layers tensors); blocks_total counts what that holds. A budget is a cap, not a
     *  reservation: memory is committed as blocks are used, and kvc_engine_create succeeds
     *  whatever RAM is free, so the budgets of a machine's engines (of one process or many)
     *  must fit its memory together. Shared memory the kernel cannot find when a block is
     *  committed usually ends in the OOM killer rather than KVC_ERR_OUT_OF_MEMORY (that is
     *  the case of a memory-limited cgroup with room to reclaim); kvc_engine_reserve at
     *  start-up commits the budget and turns that later kill into KVC_ERR_OUT_OF_MEMORY then
     *  (docs/memory.md, "When the OS refuses a commit"). */
    uint64_t memory_bytes;
    /** Physical page size: a power of two from 4096 to 2097152. Default 65536. Memory is
     *  committed and given back in page groups of a page of every tensor (paged layout: of
     *  max(1, page_bytes / block bytes) blocks, rounded up to whole pages), so blocks whose
     *  bytes per layer neither divide page_bytes nor are a multiple of it leave the rest of
     *  each group empty (up to about half of memory_bytes; logged once per process, by the
     *  first create past 5 % that succeeds).
     *  2 MiB asks for transparent huge pages, which the kernel gives a process's shared memory
     *  unless prctl(PR_SET_THP_DISABLE) is set (not its advised-only mode), the top-level
     *  shmem_enabled is deny, the per-size hugepages-2048kB/shmem_enabled (Linux 6.11+) is
     *  never, or that is inherit (or absent) and the top-level one is never; otherwise small
     *  pages are used, the reason is logged once, and kvc_stats.huge_pages reads 0. With
     *  2 MiB, huge or not, a group is 128 MiB at 32 layers: memory falls only by whole groups,
     *  and the contiguous layout holds at least one group per live sequence (65536 commits and
     *  frees in finer steps). */
    uint64_t page_bytes;
    /** NUMA node to bind K/V memory, the disk tier's staging buffers and episodic offload's
     *  open-record buffers to, or -1 (default) for the default policy. */
    int32_t numa_node;
    /** 1: metadata only — the prefix index, LRU, events and block accounting are real but
     *  no memory is mapped and kvc_block_kv returns KVC_ERR_UNSUPPORTED (for simulators).
     *  Paged layout only. 0 (default): normal engine. Past KVC_CONFIG_MIN_SIZE: a caller
     *  whose struct_size ends before it gets 0. */
    uint32_t metadata_only;
    /** Directory of the disk tier (see DISK TIER), or NULL (default) or "": no disk tier. Set it
     *  and offload_bytes together: one without the other is KVC_ERR_INVALID_ARGUMENT (so is
     *  an offload_dir in a struct whose struct_size ends before offload_bytes). It must
     *  exist; the engine creates kvcache.slab, kvcache.journal and kvcache.identity (see
     *  model_tag) in it and finds its spilled blocks there again after a restart. One engine
     *  per directory: while an engine (of this process or another) holds it,
     *  kvc_engine_create on it fails with KVC_ERR_IO; so does a directory or file the
     *  engine's user cannot trust (DISK TIER, Permissions). The string is copied; at most 4074
     *  bytes (its files' paths stay within PATH_MAX; longer is KVC_ERR_INVALID_ARGUMENT, as
     *  is a longer directory in peer_offload_dirs) and valid UTF-8: a path of other bytes
     *  (a Latin-1 name) is KVC_ERR_INVALID_ARGUMENT naming offload_dir, and nothing is
     *  created anywhere. */
    const char *offload_dir;
    /** Largest size of the slab file in bytes; 0 (default, with offload_dir NULL): no disk
     *  tier. Must hold at least one slot: 4096 + 2 * num_layers * block_tokens * token_bytes,
     *  rounded up to 4096, and at most 4194304 slots' bytes (else KVC_ERR_INVALID_ARGUMENT,
     *  naming that largest size at this shape). A slot is at most 2147418112 bytes
     *  (2^31 - 64 KiB): one read or write moves it, and Linux moves at most 2^31 bytes less a
     *  page at once; a shape with a larger slot and a disk tier (so also with
     *  peer_offload_dirs) is KVC_ERR_INVALID_ARGUMENT naming the slot's size and that limit.
     *  These sizes are checked before any memory is reserved, anything is created in
     *  offload_dir or any peer is read. Space is preallocated as slots are first needed.
     *  Memory outside memory_bytes: 103-127 bytes and a bit per slot of offload_bytes from
     *  the create on (~200 at a restart's peak: DISK TIER, Restart), plus the staging buffers. */
    uint64_t offload_bytes;
    /* -- token eviction (see TOKEN EVICTION below); kvc_seq_set_eviction overrides the
     *    policy and granularity per sequence -- */
    /** KVC_EVICTION_NONE (default), _STREAMING_LLM, _TOVA, _HEAVY_HITTER or _EPISODIC. */
    uint32_t eviction_policy;
    /** 0 (default): one kept set per layer, from scores summed over its heads (for H2O a
     *  per-layer variant; TOVA's paper averages over heads, as this does). 1: one per KV head
     *  (positions then differ per head; see kvc_seq_positions): H2O as its paper keeps. */
    uint32_t eviction_per_head;
    /** StreamingLLM: first positions always kept (attention sinks). Default 4. */
    uint32_t sink_tokens;
    /** H2O / episodic recent window in tokens; 0 (default) means recent_ratio * budget. One
     *  past the budget is clamped to it: the newest `budget` tokens are kept. */
    uint32_t recent_tokens;
    /** H2O / episodic recent window as a fraction of the budget, 0..1. Default 0.5. */
    float recent_ratio;
    /** H2O / episodic: 0 (default) ranks tokens by the raw sum of their attention (the H2O
     *  paper); 1 by that sum divided by the queries that could see the token. */
    uint32_t normalized_scores;
    /** Episodic: episodes k of the k-means over segments, 1..64. Default 4. */
    uint32_t episodes;
    /** Episodic: embedding dimension, 1..4096, or 0 (default): fixed per sequence by its
     *  first segment. */
    uint32_t embedding_dim;
    /** Episodic: k-means seed (same segments and seed, same episodes everywhere). */
    uint64_t episode_seed;
    /** 1: per-layer budgets follow kvc_seq_set_layer_sensitivity or, without it, the
     *  observed attention entropy (the mean stays budget_tokens exactly, every layer keeping
     *  at least one token: sensitivities {0, 1} at budget 8 keep 1 and 15).
     *  0 (default): uniform. */
    uint32_t adaptive_budgets;
    /** 1: index the prompt's blocks as they are scheduled (kvc_seq_schedule), not at
     *  kvc_seq_create; see WRITING K/V. 0 (default): indexed at kvc_seq_create. Offset 124,
     *  padding in earlier versions of this header (kvc_config_init zeroed it), so the struct
     *  stays 128 bytes; a library older than this field ignores it (and lacks
     *  kvc_seq_schedule). Values other than 0 and 1 are KVC_ERR_INVALID_ARGUMENT. */
    uint32_t index_on_schedule;
    /** Disk tier: staging buffers of one slot each, 32..1024 (default 32; else
     *  KVC_ERR_INVALID_ARGUMENT); the tier uses more when slots are small, up to 32 MiB of
     *  them, and never more than its slots (offload_bytes / slot bytes). They bound the
     *  requests in flight and how many cold blocks an allocation can write back at once: an
     *  allocation's spill that finds none free beyond the reserve is skipped
     *  (kvc_stats.spills_skipped). More buffers write more cold blocks back, at one slot of
     *  memory outside memory_bytes each. Also caps episodic offload's open records. Offset
     *  128 (the struct is 136 bytes since this field); a caller's older, 128-byte struct
     *  gets the default. */
    uint32_t offload_queue_depth;
    /** Reserved (offset 132): must be 0. */
    uint32_t reserved_132;
    /** Peer disk tiers: other engines' offload_dir directories, ':'-separated (at most 16,
     *  empty entries ignored), whose spilled blocks this engine reads, or NULL (default): no
     *  peers. Read-only: this engine never takes a peer's lock, never creates or writes a
     *  file there, and opens its slab O_RDONLY, so a peer may be held by a running engine of
     *  another process (on a shared file system, of another machine). Needs a disk tier of
     *  this engine's own (offload_dir, offload_bytes) and a model_tag other than 0 (else
     *  KVC_ERR_INVALID_ARGUMENT; a peer's tag must then equal it). See
     *  DISK TIER, Peers. kvc_engine_create fails, creating nothing and leaving offload_dir
     *  untouched, with KVC_ERR_IO when a peer directory does not exist or holds no
     *  kvcache.identity, kvcache.slab and kvcache.journal yet (no engine has used it), and
     *  with KVC_ERR_INVALID_ARGUMENT when a peer is this engine's own offload_dir (or the
     *  same directory twice) or its blocks are of another model_tag or shape (num_layers,
     *  num_kv_heads, head_dim, dtype_bytes, block_tokens; see model_tag); the message names
     *  the directory. Each directory is at most 4074 bytes, like offload_dir, and the string
     *  valid UTF-8 (else KVC_ERR_INVALID_ARGUMENT naming peer_offload_dirs, before any
     *  directory is looked at). The string is copied. Offset 136 (the struct is 144
     *  bytes since this field); a caller's older 136- or 128-byte struct gets no peers. */
    const char *peer_offload_dirs;
    /** The model whose K/V this engine holds: any number that differs between models, weights
     *  or anything else that changes K/V for the same tokens (a LoRA adapter, a KV
     *  quantisation); default 0. Block hashes depend on the tokens only, so the disk tier
     *  records this tag with the block shape (num_layers, num_kv_heads, head_dim, dtype_bytes,
     *  block_tokens) in offload_dir/kvcache.identity, a text file written once by the engine
     *  that owns the directory. kvc_engine_create fails with KVC_ERR_INVALID_ARGUMENT, naming
     *  what differs and changing nothing in the directory, when offload_dir or a peer holds
     *  blocks of another tag or shape, so no engine is served another model's K/V after a
     *  restart or from a peer (two models with the same bytes per block would otherwise pass
     *  every slot check). A directory without the file (new, or from a version before it)
     *  gets this engine's, with a new fingerprint key (BLOCK HASH: blocks fingerprinted before
     *  then are dropped at that open, never served, and can be cached again); a peer without it is
     *  KVC_ERR_IO. A directory (or peer) whose file is of tier format 1 (written before
     *  2026-11-24, whose payload checksums this library no longer accepts) or 2 (before
     *  2026-11-25, whose journal carries no block fingerprints) is KVC_ERR_INVALID_ARGUMENT,
     *  the message naming the files whose removal lets an engine of this build start it
     *  empty (a peer's: by its own engine). The file also holds the directory's fingerprint
     *  key (mode 0600: whoever reads it can craft fingerprint collisions for that tier).
     *  0 names no model: a tier one engine owns accepts it (its restarts must keep the
     *  model), but peer_offload_dirs needs another value, since a fine-tune and its base have
     *  the same shape and would both leave it at 0. Offset 144 (the struct is 152 bytes since
     *  this field); a caller's older struct gets 0. */
    uint64_t model_tag;
    /** The server's prefill speed for this model, in prompt tokens per second; 0 (default):
     *  unknown, and kvc_seq_create reads back every block of a prompt's prefix it finds on
     *  disk. Otherwise it reads them only when the disk is expected to return them sooner
     *  than the server would compute them: the block reads already queued or in flight plus
     *  these, at the rate block reads drained lately (spill writes and other traffic
     *  included), against their tokens at this speed. When not, the prefix ends at its first
     *  block found only on disk (cached_tokens says where) and the server computes the rest;
     *  kvc_stats.disk_declined_hit_tokens counts those tokens. Until a block read has been
     *  timed, and when none ran for 1 s, a create reads (and so measures the disk again).
     *  Use it when a slow or busy disk must not delay a first token; it costs compute that
     *  reading would have saved. Finite and at least 0, else KVC_ERR_INVALID_ARGUMENT.
     *  Offset 152 (the struct is 160 bytes since this field); a caller's older struct gets 0. */
    double prefill_tokens_per_s;
    /** 1: a thread of the engine writes the coldest cached blocks to the disk tier ahead of
     *  their eviction (the oldest within twice the staging buffers, each block's missing
     *  ancestors first), copying them with the engine's lock released; an allocation that
     *  evicts a block the thread wrote or is copying then copies nothing, and one the thread
     *  has not reached (it falls behind when calls evict faster than it writes) is copied in
     *  the call as without it, or dropped when no staging buffer is free
     *  (kvc_stats.spills_skipped). Measured to pay with a tier larger than the memory
     *  (docs/disk-tier.md, the shared-prefix rows); with a tier of a few dozen slots under
     *  gigabytes of cache the evicting calls still copy most blocks, and the thread measured
     *  no faster than spills in the call. 0
     *  (default): each eviction copies its block (and up to 8 missing cached ancestors,
     *  oldest first) into a staging buffer inside the evicting call, under the lock,
     *  delaying that call and every other; finding those ancestors takes amortised ~10-30
     *  hash lookups per eviction (O(L) in all for a freed chain of L blocks, not O(L^2)).
     *  A block being copied stays usable; a call that must evict or rewrite it waits for its
     *  copy (at most 8 blocks' copies). Which blocks reach the disk then depends on the
     *  thread's timing. The thread never makes room by dropping a disk slot whose block memory
     *  still holds (it takes a free slot, grows the slab within offload_bytes, or drops up to
     *  16 slots of blocks that left memory among the tier's 64 oldest; else it waits for
     *  memory to change), so an idle engine writes each cached block at most once even when
     *  the tier is smaller than the cache; and after a write fails it writes nothing ahead
     *  until a later write (an eviction's, kvc_engine_trim's, a swap-out's) succeeds, so a
     *  failing disk sees each block at most once from it.
     *  kvc_stats.disk_blocks_written_ahead counts its writes. Needs a disk tier; 0 or 1, else
     *  KVC_ERR_INVALID_ARGUMENT. Offset 160 (the struct is 168 bytes since this field, with
     *  reserved_164, now event_capacity); a caller's older struct gets 0. */
    uint32_t offload_writeback;
    /** KV events the queue holds between two kvc_drain_events before it drops the oldest
     *  (kvc_stats.events_dropped): 0 (default): 65536; else 1..16777216, else
     *  KVC_ERR_INVALID_ARGUMENT. 24 bytes (one kvc_event) per event, allocated by
     *  kvc_engine_create (1.5 MiB by default, 384 MiB at most; resident as the queue first
     *  fills). Size it to the busiest stretch between two drains: one BLOCK_STORED per block
     *  filled, one BLOCK_REMOVED per cached block evicted (or spilled), so at block_tokens 1
     *  under memory pressure up to two per prompt token: a scheduler step admitting 64
     *  prompts of 4096 tokens pushes ~520k (docs/events.md, "Sizing the queue"). An engine
     *  whose events nobody drains may take 1. The default does not grow with the engine's
     *  blocks: the events between drains follow the tokens admitted per drain, which the
     *  engine does not know. Offset 164 (reserved_164 before 2026-11-26: the struct stays
     *  168 bytes); a caller's older struct, or one whose byte 164 was reserved, gets 65536. */
    uint32_t event_capacity;
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
 * Budgeting admission: these counters do not say whether a prompt fits; ask kvc_prefix_admit,
 * which runs the create's own check. Paged: blocks_total - blocks_used counts cached blocks as
 * free, but a create that hits a cached block no live sequence holds takes it out of that
 * pool, and no counter says how many of a prompt's hits are in that state, so
 * need <= blocks_total - blocks_used over-admits (a reviewer's scheduler: 1,201 creates then
 * refused) and counting hits as used under-admits (662 refused that fit). Contiguous:
 * blocks_total counts logical blocks plus a partial one per slot and blocks_used only whole
 * held blocks, so blocks_total - blocks_used may read half free when memory is full;
 * budget_bytes - committed_bytes is the memory not committed, not the headroom (freed
 * sequences' pages and cached blocks' pages are reclaimable).
 *
 * Forward compatibility: set struct_size = sizeof(kvc_stats) before the call.
 * - struct_size < KVC_STATS_MIN_SIZE (including 0): KVC_ERR_INVALID_ARGUMENT.
 * - A smaller struct (an older caller): only the fields that fit entirely are written.
 * - A larger struct (a newer caller): every known field is written and the bytes past them
 *   up to struct_size are set to 0. Above KVC_STRUCT_SIZE_MAX: KVC_ERR_INVALID_ARGUMENT.
 * struct_size itself is never written; the padding after it (offset 4) is written 0.
 */
typedef struct kvc_stats {
    /** Bytes of this struct as the caller compiled it: sizeof(kvc_stats). Input only. */
    uint32_t struct_size;
    /** The exact physical budget, memory_bytes. */
    uint64_t budget_bytes;
    /** Physical bytes the engine holds now (allocated pages of its pool). */
    uint64_t committed_bytes;
    /** Blocks of block_tokens tokens the budget (memory_bytes rounded down to whole page
     *  groups) can hold. Contiguous layout: logical blocks
     *  (the prefix cache's unit), the budget's worth plus one partial block per sequence
     *  slot, so blocks_total * block_tokens overstates the tokens that fit. */
    uint64_t blocks_total;
    /** Blocks referenced by live sequences (a block shared by several counts once), and by
     *  freed ones whose disk reads are still landing (see kvc_seq_free). */
    uint64_t blocks_used;
    /** Blocks held only by the prefix index (reusable on a hit, evicted in LRU order). */
    uint64_t blocks_cached;
    /** Live sequences (not those freed whose memory waits for disk reads, see kvc_seq_free). */
    uint64_t sequences;
    /** Prompt tokens looked up in the prefix index by kvc_seq_create calls that succeeded, in
     *  total (a refused create counts nothing, so a retried prompt counts once). */
    uint64_t prefix_query_tokens;
    /** Of those, tokens served from the index. */
    uint64_t prefix_hit_tokens;
    /* -- fields past KVC_STATS_MIN_SIZE: written when struct_size covers them -- */
    /** Sequences created since the engine started, by kvc_seq_create or kvc_seq_fork
     *  (including freed ones). */
    uint64_t sequences_created;
    /** Cached blocks evicted from memory to make room, since the engine started; this
     *  includes the indexed blocks only a swapped-out sequence held, which its swap-out
     *  evicts once they are on disk (not kvc_engine_trim's drops). */
    uint64_t blocks_evicted;
    /** Memory mappings this engine holds (contiguous layout; 0 when paged), counted from its
     *  page tables as the kernel has them: the VMAs of its reservation, each run of pages and
     *  each unmapped stretch between runs one per layer's K and V, merged where the kernel
     *  merges them. A failed map or unmap (the process at vm.max_map_count) may leave its
     *  pages' old mappings, which the page tables no longer list: until maps replace them
     *  the count adds a bound of what they may hold (at most one per tensor and page
     *  boundary those pages touch; a refused call near them may raise it), so it never trails
     *  the kernel and may lead it by that much; /proc/self/maps (O(the process's mappings))
     *  is read only before a map the count would refuse, once per change near such pages
     *  (docs/memory.md). Lockstep decode (sequences appending
     *  in turn) makes every page a run: one mapping per page per tensor, so the limit caps a
     *  process's contiguous K/V near vm.max_map_count x page_bytes (~3.7 GiB at 65530 and the
     *  default 64 KiB pages; use 2 MiB pages for long contexts). vm.max_map_count is the
     *  process's: the contiguous engines of a process keep the sum of their counts under one
     *  limit, vm.max_map_count less what the rest of the process holds and 4096 more, taken
     *  at its first engine's creation (again at an engine created when the process has none
     *  left), lowered by later ones, and measured again (at most once a second) before a map
     *  is refused, so that it rises once the rest of the process has let go of mappings
     *  (docs/memory.md, "The mapping limit"); an engine over it unmaps its own freed
     *  sequences' pages, then refuses. */
    uint64_t mappings;
    /** Events dropped, oldest first, because they were not drained in time (the queue holds
     *  kvc_config.event_capacity, 65536 by default, plus, until a drain leaves at most that
     *  many pending, room for as many as kvc_engine_create pushed: see there). */
    uint64_t events_dropped;
    /* -- the disk tier (all 0 without one) -- */
    /** Bytes the disk tier may use (whole slots of offload_bytes), and bytes of its slots
     *  holding blocks now: a slot counts from the call that processes its write's completion
     *  (see COMPLETIONS), so after kvc_engine_trim spilled blocks it lags blocks_spilled and
     *  their BLOCK_STORED events until a later call (kvc_engine_poll) processes them. */
    uint64_t disk_capacity_bytes;
    uint64_t disk_stored_bytes;
    /** Bytes written to and read from the slab file since the engine started (reads of peers'
     *  slabs, peer_offload_dirs, included). */
    uint64_t disk_bytes_written;
    uint64_t disk_bytes_read;
    /** Prompt tokens kvc_seq_create found in the disk tier (included in prefix_hit_tokens;
     *  tokens found in peers' tiers are not). */
    uint64_t disk_hit_tokens;
    /** Cached blocks whose write to disk was submitted instead of dropping them (when
     *  evicted; ahead of that as ancestors of an evicted block, so that what reaches the disk
     *  stays reachable; by kvc_engine_trim; by offload_writeback's thread), counted at the
     *  submission: writes that then fail are included, and counted again in
     *  disk_spills_failed, so blocks_spilled - disk_spills_failed blocks were written or are
     *  being written. blocks_loaded: slots read back from this engine's own tier and
     *  verified (prefix blocks, swapped-out blocks, episodic records alike); a block read from
     *  a peer counts in peer_hits instead (its bytes in disk_bytes_read). */
    uint64_t blocks_spilled;
    uint64_t blocks_loaded;
    /** Spills that could not be written, writes of swapped-out blocks and offloaded-token
     *  records that failed, reads that failed or were torn or corrupt, plus journal appends
     *  that failed (a full disk: each append of a batch of records; its records are kept and
     *  appended by a later call, see kvc_engine_sync). */
    uint64_t disk_errors;
    /** Swap-outs completed (every write on disk, memory released), and swapped-out sequences
     *  read back in. A kvc_seq_swap_out_async cancelled by a swap-in or free counts in
     *  neither (see swap_outs_cancelled). */
    uint64_t swap_outs;
    uint64_t swap_ins;
    /** Episodic offload (kvc_seq_compact / kvc_seq_focus with a disk tier): slab slots holding
     *  sequences' evicted tokens now, each counted once however many sequences hold it (a
     *  fork shares its parent's; never prefix hits; part of disk_stored_bytes once a call has
     *  processed its write's completion, as any slot, while token_records counts it from the
     *  write's submission); and the
     *  tokens whose K/V those slots hold, each slot's counted once (tokens_on_disk x 2 x
     *  bytes of a token, below, is their payload on disk). Counted from the slot's write until
     *  the slot is freed (its last holder let go), or, when its write failed, until a call
     *  processed the failure: the call that counts its tokens in tokens_lost (for the last
     *  sequence holding it) uncounts the slot in the same step, so no snapshot has them in
     *  neither. A token restored into memory or dropped by one sequence stays counted while
     *  its slot is held. Tokens in open records, not written yet, are in
     *  tokens_in_open_records instead. A token in these counters is what a sequence keeps or
     *  evicts: per layer one layer's token (K and V of every KV head, 2 * token_bytes), per
     *  head (eviction_per_head) one KV head's part of it (2 * head_dim * dtype_bytes): a
     *  per-head sequence evicting a position from every head of a layer counts num_kv_heads. */
    uint64_t token_records;
    uint64_t tokens_on_disk;
    /** Episodic offload totals, in the same tokens: evicted to the tier (counted when copied
     *  into an open record or written out; an open record kvc_seq_free discards stays counted,
     *  neither written nor lost), read back into memory, and lost (their record could not be
     *  written, or its read failed or was torn or corrupt: dropped, never served; a write that
     *  fails on the device counts its record's tokens, in each sequence holding it, all in the
     *  call that processes the failure, see COMPLETIONS, which uncounts the record from
     *  token_records and tokens_on_disk in the same step: no snapshot counts a sequence's tokens
     *  both there and here, nor in neither). */
    uint64_t tokens_offloaded;
    uint64_t tokens_restored;
    uint64_t tokens_lost;
    /** Swap-outs started (kvc_seq_swap_out and kvc_seq_swap_out_async that got as far as
     *  their first write; a call that fails before starts none), those cancelled by a
     *  kvc_seq_swap_in or kvc_seq_free before they completed, those that failed after they
     *  started (a write failed, or the tier refused a later block: the sequence stayed
     *  resident and unchanged), and those pending now. Every swap-out started ends exactly
     *  once: swap_outs_started == swap_outs + swap_outs_cancelled + swap_outs_failed +
     *  swap_outs_pending in every snapshot. */
    uint64_t swap_outs_started;
    uint64_t swap_outs_cancelled;
    uint64_t swap_outs_failed;
    uint64_t swap_outs_pending;
    /** Episodic offload: tokens in open records now (copied into their memory buffers, not
     *  written yet: see kvc_seq_compact; a fork's copy of its parent's counts too); they join
     *  tokens_on_disk when their record is written out. Like tokens_on_disk, a token restored from the buffer stays counted until
     *  its record is written out or discarded (its bytes are still there). */
    uint64_t tokens_in_open_records;
    /** 1 when the K/V memory is committed as 2 MiB huge pages: page_bytes is 2 MiB and the
     *  kernel lets this process's shared memory use transparent huge pages (see page_bytes); 0
     *  otherwise, including when 2 MiB pages fell back to small ones (logged once on stderr).
     *  The kernel may still back a commit with small pages when it finds no free 2 MiB page
     *  (fragmentation): smaps' ShmemPmdMapped shows what it gave. */
    uint64_t huge_pages;
    /** Cached blocks an allocation (kvc_seq_create, kvc_seq_append, kvc_seq_fork,
     *  kvc_seq_swap_in) evicted from memory and did not write to the disk tier because no
     *  staging buffer was free beyond the eighth kept for reads, records and swap-outs' first
     *  blocks (see kvc_seq_swap_out_async and FAULTS): each is dropped as without a tier
     *  instead of waiting for the device while the engine's lock is held (a spill first takes
     *  the writes already completed, without waiting), or because every slot of the tier is
     *  held (swapped-out sequences' blocks, offloaded-token records, I/O in flight: nothing
     *  cached to drop for room). Not an error (not in disk_errors). Many skips mean the
     *  staging buffers are full of writes still on the device (pending swap-outs', or spills
     *  coming faster than the device writes them), or a tier too small for the sequences
     *  swapped out to it. With kvc_config.offload_writeback the same, among the evicted
     *  blocks the writeback thread had not written or begun copying. A trim's blocks count
     *  only when every slot is held otherwise (see kvc_engine_trim). */
    uint64_t spills_skipped;
    /** Peers (kvc_config.peer_offload_dirs): blocks read from a peer's slab, verified and
     *  served (each is then an ordinary cached block of this engine; counted when its read
     *  completes). Offset 280. */
    uint64_t peer_hits;
    /** Peer reads refused, never served: the slot no longer held what the peer's journal said
     *  when it was looked up (the peer freed and rewrote it since), was torn, or could not be
     *  read (the peer's file removed or truncated). Each is a miss: the sequence's
     *  kvc_seq_ready fails with KVC_ERR_IO as for a corrupt slot of the own tier, the entry
     *  leaves this engine's index of the peer, and a new kvc_seq_create reports the cached
     *  tokens only up to that block. Offset 288 (the struct is 296 bytes since these two). */
    uint64_t peer_stale;
    /** Prompt tokens of the peer blocks counted in peer_hits: counted with them, when the
     *  read verified (a refused or cancelled read adds nothing, unlike prefix_hit_tokens, which
     *  counts what kvc_seq_create answered). Offset 296 (the struct is 304 bytes since). */
    uint64_t peer_hit_tokens;
    /** Blocks kvc_engine_create found again in the disk tier's journal (a restart on the same
     *  offload_dir), and journal records it could not use, whose blocks it forgot (their
     *  slots are reused): each whole record that is torn or corrupt (skipped: the replay goes
     *  on past it, the slot's previous record winning, whose slot bytes a read verifies as any
     *  other; a crash tears at most the records being appended), a partial record at the
     *  journal's end (a torn tail a crash or a short write leaves: one), records whose
     *  checksum holds but whose generation is at or past 2^63 (no engine writes one), records of
     *  slots past a smaller offload_bytes, and a slot's latest record saying stored that lies
     *  past the slab file. Both fixed at creation; kvc_engine_create logs a line on stderr
     *  naming the directory when records were dropped. Offsets 304 and 312 (the struct is 320
     *  bytes since). */
    uint64_t disk_recovered_blocks;
    uint64_t disk_journal_dropped;
    /** Prompt tokens kvc_seq_create found only on disk (own tier or peers') and did not read
     *  because kvc_config.prefill_tokens_per_s expected the server to compute them sooner
     *  (not in prefix_hit_tokens). Offset 320 (the struct is 328 bytes since). */
    uint64_t disk_declined_hit_tokens;
    /** Of blocks_spilled, those kvc_config.offload_writeback's thread submitted ahead of
     *  their eviction, writes that then failed included (they count in disk_spills_failed
     *  too). Offset 328 (the struct is 336 bytes since). */
    uint64_t disk_blocks_written_ahead;
    /** Of blocks_spilled, the writes that failed: an I/O error, a short write, or a request
     *  the I/O queue refused (also in disk_errors; each failed block leaves the tier with a
     *  KVC_EVENT_BLOCK_REMOVED of KVC_TIER_DISK after its KVC_EVENT_BLOCK_STORED). Spills that
     *  failed before their submission (no slot could be had, a failed copy) count in
     *  disk_errors only. Offset 336 (the struct is 344 bytes since). */
    uint64_t disk_spills_failed;
    /** The disk tier's I/O path (see DISK TIER, I/O), fixed at creation: 0 no disk tier;
     *  1 io_uring with the staging buffers registered (pinned once); 2 io_uring with them
     *  pinned per request, their registration refused (RLIMIT_MEMLOCK, usually); 3 the
     *  pread/pwrite thread pool (io_uring unavailable, or KVCACHE_OFFLOAD_BACKEND=threads).
     *  Offset 344 (the struct is 352 bytes since). */
    uint64_t disk_io_mode;
    /* more may follow */
} kvc_stats;

/** The smallest kvc_stats.struct_size accepted: the struct up to and including
 *  prefix_hit_tokens. */
#define KVC_STATS_MIN_SIZE (offsetof(kvc_stats, prefix_hit_tokens) + sizeof(uint64_t))

/** Largest struct_size accepted for kvc_config, kvc_stats and the router's structs; larger is
 *  taken to be garbage. */
#define KVC_STRUCT_SIZE_MAX 4096u

/** One change to the prefix cache. 24 bytes, no padding. */
typedef struct kvc_event {
    /** KVC_EVENT_BLOCK_STORED, KVC_EVENT_BLOCK_REMOVED or KVC_EVENT_ALL_CLEARED. */
    uint32_t kind;
    /** KVC_TIER_MEMORY or KVC_TIER_DISK. Each tier is its own set: a block spilled to disk
     *  is KVC_EVENT_BLOCK_STORED in KVC_TIER_DISK and KVC_EVENT_BLOCK_REMOVED in
     *  KVC_TIER_MEMORY; one read back is stored in memory and stays on disk. */
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

/** Returns KVC_ABI_VERSION of the library: compare with the header's at start-up to catch a
 *  library whose functions changed meaning. A library that lacks a function the program
 *  calls is refused by the loader before that (LOADING). Pure, thread-safe. */
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

/** Writes the defaults listed in kvc_config to the first `size` bytes at *cfg and sets
 *  cfg->struct_size = size: reserved fields and any bytes past the fields this library knows are
 *  zeroed (0 is every later field's "as before"), nothing past `size` is written. Pass
 *  sizeof(kvc_config) as you compiled it; the kvc_config_init macro below does. NULL, or
 *  `size` below KVC_CONFIG_MIN_SIZE or above KVC_STRUCT_SIZE_MAX: nothing written.
 *  Thread-safe. */
void kvc_config_init_size(kvc_config *cfg, size_t size);

/** The first version's initialiser: writes exactly 128 bytes (the fields through
 *  index_on_schedule) and sets struct_size = 128, as the first header promised, so that a
 *  binary built against a 128-byte kvc_config never has bytes written past its struct. Code
 *  compiled against this header reaches kvc_config_init_size through the macro below instead
 *  (only `(kvc_config_init)(cfg)` or a function pointer calls this symbol). Until 2026-11-22
 *  this symbol wrote sizeof(kvc_config) of the library (136, 144, then 152 bytes; 160 since), 8-24 bytes
 *  past a first-version caller's struct; a binary built against one of those headers that
 *  still calls the symbol now gets struct_size 128, so the fields past 128 it sets are read
 *  as their defaults: rebuild it. NULL: no-op. Thread-safe.
 *  Foreign-function bindings (Python ctypes or cffi's ABI mode, Go, Rust's bindgen output)
 *  see no macros and so reach this symbol, whose struct_size 128 makes the library ignore
 *  every field past it without error (offload_writeback, prefill_tokens_per_s, model_tag,
 *  ...): call kvc_config_init_size(cfg, sizeof(kvc_config)) instead, with the size of the
 *  struct as the binding declares it (kvc_router_config_init_size likewise).
 *  Compatibility promise: a library whose kvc_config grows keeps both symbols as they are;
 *  its new fields default to 0 (= the behaviour before them). */
void kvc_config_init(kvc_config *cfg);
#define kvc_config_init(cfg) kvc_config_init_size((cfg), sizeof(kvc_config))

/**
 * Creates an engine shaped by *cfg and stores its handle in *out.
 * Reserves the virtual address space of the layout up front (MAP_NORESERVE: no physical
 * memory until sequences need it); cost grows with max_seqs * num_layers (contiguous).
 * Metadata (block tables, prefix index, event queue of event_capacity entries) is allocated here,
 * once; successful calls do not allocate afterwards (a failing call formats its message),
 * but for eviction state (TOKEN EVICTION), episodic offload's open-record buffers, mapped
 * here only with eviction_policy KVC_EVICTION_EPISODIC (see kvc_seq_set_eviction), and a
 * swap-out started while more are pending than ever before (kvc_seq_swap_out, Allocation).
 * Events: the engine's first event is one KVC_EVENT_ALL_CLEARED of KVC_TIER_MEMORY (every
 * layout, metadata_only too): its memory index starts empty, and a router still holding what
 * an earlier engine of this instance announced (a restart it did not notice: the unnumbered
 * kvc_drain_events carries no engine epoch; kvc_drain_events_seq's epoch, KVC_1.1, tells a
 * restart apart) forgets it when it applies the events in order. With a disk tier, the
 * tier's own events follow (DISK TIER, Events: its ALL_CLEARED, then one BLOCK_STORED per
 * block it found). The queue holds these beside its event_capacity, so none is dropped before
 * the first kvc_drain_events; that room stays until a drain leaves at most event_capacity
 * events pending, which frees it (the queue holds event_capacity again). No kvc_stats field
 * counts them (events_dropped does only if they are dropped later, as any event).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL cfg/out, bad struct_size, a field out of range or
 * memory_bytes too small for one block or page group or holding more than 2^24 blocks or
 * 2^30 page groups — the
 * message names it; also max_seqs * ceil(max_seq_tokens / block_tokens) above 2^28
 * block-table entries),
 * KVC_ERR_UNSUPPORTED (a non-zero unknown field, or memfd_create or mbind refused with EPERM
 * or EACCES: a seccomp profile or a missing capability), or KVC_ERR_OUT_OF_MEMORY (the
 * address space — at most 65536 GiB for one contiguous engine, and the process's 128 TiB
 * of user address space shared by all its engines' reservations and everything else it maps,
 * so two engines of 65536 GiB do not fit — or the metadata cannot be
 * had, the message naming what and the fields that sized it: the block tables, 4 bytes per
 * max_seqs x ceil(max_seq_tokens / block_tokens) entry (up to 1 GiB); the partial blocks'
 * tokens, 8 bytes per max_seqs x block_tokens (up to 32 GiB); roughly 115 bytes per memory
 * block (memory_bytes / block bytes) for its state and the prefix index, 70 more with a disk
 * tier, and 100 per disk-tier slot and 72 per max_seq_tokens / block_tokens (a swap-out's
 * buffers) — refused under RLIMIT_AS, a cgroup limit or with
 * overcommit off; or a thread
 * cannot be started, see KVC_ERR_OUT_OF_MEMORY; or the disk tier's staging buffers or
 * episodic offload's open-record buffers cannot be mapped, the message naming which; or
 * memory_bytes passes the 2^63 - 1 bytes a memory file holds). Everything the create made
 * is released: a disk tier's directory may be used again at once.
 * On failure *out is set to NULL (when out is not NULL).
 */
kvc_status kvc_engine_create(const kvc_config *cfg, kvc_engine **out);

/** Releases the engine and all its memory, also the K/V memory a child forked without exec
 *  still maps (PROCESSES); every pointer it returned becomes invalid. In such a child, on an
 *  engine it inherited: only unmaps the child's mappings and closes its descriptors; the
 *  parent's engine is untouched (PROCESSES).
 *  With a disk tier it first waits for every request in flight (pending swap-outs' included),
 *  then appends the journal records owed and fdatasyncs slab and journal: without a time
 *  limit, as long as the device stalls (a 30 s stall held it 30 s). Only kvc_engine_create's
 *  wait for an ended engine's I/O on the same directory is capped (60 s).
 *  NULL: no-op. Must not race with any other call on `e`; `e` must not be used after. */
void kvc_engine_destroy(kvc_engine *e);

/**
 * Returns every physical page not holding live-sequence data to the OS. Cached prefix
 * blocks are dropped from memory — one KVC_EVENT_ALL_CLEARED (KVC_TIER_MEMORY) when that
 * empties the index, else one KVC_EVENT_BLOCK_REMOVED per dropped block no live block of the
 * same tokens replaces (kvc_seq_append) — so later prompts
 * miss the memory cache until it refills. With a disk tier they are spilled to disk first
 * (KVC_EVENT_BLOCK_STORED, KVC_TIER_DISK), so later prompts find them there. The spills, like the
 * writes of pending kvc_seq_swap_out_async calls, leave an eighth of the staging buffers free
 * for other traffic (see there): a trim with more blocks to spill than the other staging
 * buffers free spills them in steps, and between steps waits for completions without the
 * engine's lock (processing them, see COMPLETIONS; after every step, and whenever
 * completions were processed, calls blocked on the lock run first), so other threads' calls
 * proceed meanwhile and a kvc_seq_create reading its prefix from disk does not wait for the
 * trim's writes (nor does one after the trim returned). While a trim waits, pending swap-outs
 * leave it half of
 * the other staging buffers as completions free them, so it does not wait until every
 * swap-out's last block is submitted. First it waits, the same way, for the disk reads into
 * the memory of sequences already freed (see kvc_seq_free), so that memory is trimmed too
 * (its cached blocks spilled). It also waits, the same way, while every slot of the tier is
 * held by spill writes still on the device (a loop that trims and reads its prompts back
 * from the writes' staging buffers can outrun the device): each completed write's slot may
 * then be dropped, least recently used first, for the trim's next spill. A trim skips no
 * spill (spills_skipped stays) unless every slot is held otherwise (swapped-out sequences'
 * blocks, offloaded-token records, reads), which no write of its frees: then the blocks
 * left are dropped unspilled, each counted in spills_skipped. Each step
 * drops its blocks as above (ALL_CLEARED only for the step that empties the index). A trim
 * drops at most as many blocks as were cached when it started. Trimming is not eviction:
 * kvc_stats.blocks_evicted does not change. Live sequences' bytes are untouched. The free
 * page groups are then released in steps of at most 8 MiB (about 1.6 ms each on a small
 * VM), calls blocked on the lock running between steps. A reservation made while the trim
 * runs (kvc_engine_reserve, in any of its waits or steps), or by a reserve whose steps the
 * trim came between, stays committed: the trim forgets only reservations made before it.
 * Cost: proportional to the cached blocks dropped and the page groups released (each released
 * with fallocate punch-hole, about 0.2 s per GiB), plus a copy and checksum per spilled block.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e).
 */
kvc_status kvc_engine_trim(kvc_engine *e);

/**
 * Commits memory ahead of need, until `bytes` are committed in all (capped at memory_bytes),
 * so that later kvc_seq_create and kvc_seq_append calls do not pay for its first use
 * (committing and zeroing pages: about 1 s per GiB on a small VM, most of a cold create's
 * time). Paged layout: the pages are also faulted in (zeroed), with the engine's lock released
 * so other calls proceed, and so are pages committed earlier and not in use yet (the rest of
 * a commit batch: up to 8 page groups and 32 MiB, at least one group), whatever `bytes` is.
 * Contiguous layout: the pages are committed; they fault in when a sequence first writes them.
 * Like vLLM's allocation at start-up, but optional: until
 * kvc_engine_trim, which gives unused reserved memory back, resident memory no longer follows
 * live tokens. Call it once after kvc_engine_create, or when the server goes idle. A
 * kvc_engine_trim between its steps releases what it committed so far; the later steps
 * commit it again, and the reservation holds from its return as if the trim came first.
 * *committed_bytes (may be NULL) receives the committed bytes afterwards.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e), KVC_ERR_UNSUPPORTED (metadata_only: no memory),
 * KVC_ERR_OUT_OF_MEMORY (the OS refused to commit, whatever its errno; what was committed stays).
 */
kvc_status kvc_engine_reserve(kvc_engine *e, uint64_t bytes, uint64_t *committed_bytes);

/** Writes a snapshot of the counters to *out, honouring out->struct_size (see kvc_stats).
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL e/out, struct_size out of range). Cheap. */
kvc_status kvc_engine_stats(kvc_engine *e, kvc_stats *out);

/**
 * Moves up to `capacity` pending events, oldest first, into out[0 .. *n_events-1]; drained
 * events are gone. Events of both tiers (kvc_event.tier) share one queue, in the order the
 * changes happened; applying them in that order, per tier, gives exactly the blocks each tier
 * finds. Call it regularly: the queue holds kvc_config.event_capacity events, 65536 by
 * default (plus those of kvc_engine_create: the memory tier's ALL_CLEARED, and with a disk
 * tier its ALL_CLEARED and one per block a reopened tier announces: DISK TIER, Events) and,
 * when full, drops the
 * oldest (counted in kvc_stats.events_dropped; a router seeing that grow should treat its
 * view of this instance as stale and rebuild it: drain, then apply kvc_engine_index_events'
 * dump, as the replay simulator does, docs/routing.md). *n_events < capacity means the queue
 * was emptied. At block_tokens 1 every token filled and every block evicted is an event:
 * drain at least once per scheduler step and size event_capacity to a step's events.
 * Two threads draining at once each get a disjoint subset. No allocation; the engine keeps
 * its events as kvc_events, so a drain is at most two copies. The drain that leaves at most
 * event_capacity events pending after a restart's burst moves them back into the usual
 * queue and frees the burst's room (a copy of those, a free).
 * `out` may be NULL only when capacity is 0 (then *n_events = 0).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_events, NULL out with capacity > 0, capacity
 * above PTRDIFF_MAX / sizeof(kvc_event)).
 * These events carry no number: a consumer applying them must get each exactly once and in
 * order, across the instance's restarts too; through an event bus (at-least-once delivery,
 * restarts) use kvc_drain_events_seq.
 */
kvc_status kvc_drain_events(kvc_engine *e, kvc_event *out, size_t capacity, size_t *n_events);

/**
 * kvc_drain_events, numbered, for a server that publishes events on a bus (at-least-once,
 * ordered per publisher, publishers restarting): *epoch receives the engine's epoch, its
 * creation time in nanoseconds since 1970 (CLOCK_REALTIME), made greater than every epoch
 * the process drew before, never 0, fixed for the engine's life (a forked child's inherited
 * engine answers no call, PROCESSES, so never speaks under it). A restarted engine's epoch
 * is greater than its predecessor's, so a router judges a smaller one stale, as long as the
 * clocks of the hosts an instance runs on agree to better than a restart takes (NTP); a
 * clock stepped back further makes the new engine's batches look stale until the instance
 * is removed and added again. *first_seq receives
 * the number of out[0]: out[i] is event *first_seq + i of the engine's stream.
 * Every event the engine pushes is numbered, consecutive from 1 (the memory tier's
 * ALL_CLEARED of kvc_engine_create is event 1); events the full queue drops keep their
 * numbers, so the batch after a drop starts past the last one drained: a consumer sees the
 * gap. With nothing drained, *first_seq is the number the next event gets. Publish each
 * batch with (epoch, first_seq); kvc_router_observe_events_seq applies them.
 * Returns as kvc_drain_events, and KVC_ERR_INVALID_ARGUMENT for NULL epoch/first_seq;
 * *epoch and *first_seq are written only on success. Cost: kvc_drain_events'.
 */
kvc_status kvc_drain_events_seq(kvc_engine *e, kvc_event *out, size_t capacity, size_t *n_events,
                                uint64_t *epoch, uint64_t *first_seq);

/**
 * Both tiers' indexes as events, for a consumer that lost events (events_dropped grew), in
 * this order: out[0] is a KVC_EVENT_ALL_CLEARED of KVC_TIER_MEMORY, then one
 * KVC_EVENT_BLOCK_STORED of that tier (block and parent hash) per block of the memory index
 * (used or cached), each after its parent when the memory index holds that parent, so that a
 * consumer storing a block only under a parent it holds (a prefix tree) keeps every one; a
 * block whose parent the memory index lacks starts a run of its own (parent 0: a chain's
 * first block; a parent only the disk tier holds, listed in the disk part after; or one no
 * index holds: see kvc_seq_truncate); then, when the engine has a disk tier (offload_dir), one
 * KVC_EVENT_ALL_CLEARED of KVC_TIER_DISK and one KVC_EVENT_BLOCK_STORED of that tier per
 * block the tier's index holds (stored, or still being written: what a create finds), each
 * after its parent when the tier holds that too (as a reopened tier announces them). Without
 * a disk tier there is no tier-1 event; peers' blocks are never listed (peers announce none).
 * Atomicity: the dump is taken under the engine's lock, and every change to either index
 * pushes its event under that lock in the same step, so the dump sits at one point of the
 * event stream: it reflects every event pushed before it and none after. Applied to a view
 * after the events drained so far (each ALL_CLEARED discarding that tier's view, gap
 * included), it leaves the view exactly each tier's index; later drains continue from there:
 * events pushed after the dump apply to exactly its state, and events pushed before it but
 * drained after it are changes it already reflects, which applied again in order change
 * nothing (per block the last one wins either way; a view must treat a BLOCK_STORED of a
 * block it holds and a BLOCK_REMOVED of one it does not as no-ops).
 * Changes nothing in the engine: pending events stay, no statistic or LRU order moves.
 * *n_events receives the full count: 1 + memory-indexed blocks (at most 1 + the engine's
 * blocks), plus, with a disk tier, 1 + its indexed blocks (at most 1 + its slots).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_events, NULL out with capacity > 0),
 * KVC_ERR_BUFFER_TOO_SMALL (capacity < *n_events: the prefix that fits is written; call again
 * with *n_events, which may have grown meanwhile).
 * Cost: O(memory blocks + disk slots) under the engine's lock (every other call waits
 * meanwhile; two hash lookups per indexed block or slot), a temporary copy of 24 bytes per
 * listed block and 8 bytes per memory block and per disk slot of scratch: a recovery path,
 * not a per-request one.
 */
kvc_status kvc_engine_index_events(kvc_engine *e, kvc_event *out, size_t capacity, size_t *n_events);

/**
 * kvc_engine_index_events with the dump's position in the numbered stream
 * (kvc_drain_events_seq): *epoch receives the engine's epoch and *next_seq the number of the
 * first event pushed after the dump, which reflects exactly events 1 .. *next_seq - 1. Give
 * all three to kvc_router_resync_instance; batches drained later that hold events below
 * *next_seq are then duplicates, skipped. Returns and costs as kvc_engine_index_events, and
 * KVC_ERR_INVALID_ARGUMENT for NULL epoch/next_seq; *epoch and *next_seq are written only on
 * success (with KVC_ERR_BUFFER_TOO_SMALL call again: a new dump has a new position).
 */
kvc_status kvc_engine_index_events_seq(kvc_engine *e, kvc_event *out, size_t capacity,
                                       size_t *n_events, uint64_t *epoch, uint64_t *next_seq);

/* ---------------------------------------------------------------------------------------
 * Sequences (both layouts)
 * --------------------------------------------------------------------------------------- */

/**
 * Creates sequence `seq` holding the prompt tokens[0 .. n_tokens-1] (n_tokens >= 1) and
 * commits memory for all of them. Full blocks of the prompt found in the prefix index are
 * shared instead of allocated; *cached_tokens receives how many leading tokens are already
 * cached (a multiple of block_tokens, at most n_tokens - 1). The server computes and writes
 * K/V for the tokens from *cached_tokens on. The prompt's other full blocks enter the prefix
 * index now or, with index_on_schedule, through kvc_seq_schedule (see WRITING K/V). With a disk tier the lookup continues there
 * (and, for a block the own tier misses, into peer_offload_dirs' tiers: DISK TIER, Peers):
 * those blocks are read back asynchronously and count in *cached_tokens; do not read K/V
 * below *cached_tokens before kvc_seq_ready says 1. With kvc_config.prefill_tokens_per_s
 * set, blocks found only on disk are read only when the disk is expected to return them
 * sooner than that prefill computes them; otherwise *cached_tokens ends before the first.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/tokens/cached_tokens, n_tokens 0 or
 * > max_seq_tokens),
 * KVC_ERR_EXISTS (seq is live), KVC_ERR_OUT_OF_MEMORY (budget or max_seqs; nothing created;
 * while kvc_seq_swap_out_async calls are pending, or freed sequences' memory waits for
 * their reads, it first waits for them, see there and kvc_seq_free).
 * Cost: one hash per prompt token plus the page commits.
 */
kvc_status kvc_seq_create(kvc_engine *e, uint64_t seq, const int32_t *tokens, size_t n_tokens,
                          size_t *cached_tokens);

/**
 * kvc_seq_create under `salt` (BLOCK HASH, Salt): the prompt's blocks are looked up and
 * indexed, and the blocks its appends fill are indexed, under the salt's chain, so the
 * sequence shares blocks only with sequences of the same salt (salt 0: exactly
 * kvc_seq_create). Its forks keep its salt. Same checks, results and cost as kvc_seq_create.
 */
kvc_status kvc_seq_create_salted(kvc_engine *e, uint64_t seq, const int32_t *tokens, size_t n_tokens,
                                 uint64_t salt, size_t *cached_tokens);

/**
 * The prefix lookup of kvc_seq_create_salted(e, ., tokens, n_tokens, salt, .) without creating
 * anything (vLLM's get_computed_blocks): how many leading tokens of the prompt a create now
 * would report cached, split as kvc_seq_prefix_sources would report them after that create:
 * *memory_tokens in this engine's memory, *disk_tokens in its own disk tier, *peer_tokens in
 * peers' tiers. Same rule as the create: memory first at each block, then the disk tier, then
 * peers, the chain ending at the first block found nowhere; at most n_tokens - 1 in all; with
 * prefill_tokens_per_s set, disk blocks the create would leave to the prefill in none. A
 * server that admits prompts under a token budget asks it first (the tokens to compute are
 * n_tokens minus the sum), then creates the sequence with kvc_seq_create_chunked for the
 * cached prefix and the chunk it schedules. The lookup does not say whether that create fits
 * memory (a hit on a block no live sequence holds costs a free block, one on disk needs one
 * to be read into): kvc_prefix_admit answers that exactly. The answer holds until the next
 * call that changes the cache (another thread's create, free, eviction): the create does its
 * own lookup and reports what it found. Nothing protects a queued request's prefix from
 * eviction meanwhile; a server that wants it kept creates the sequence at queue time with
 * kvc_seq_create_chunked(commit_tokens 1), which holds the prefix and one block more, and
 * appends the rest when it schedules it (README, "Admission").
 * Allocates nothing and changes nothing observable: no block is pinned, read or made recently
 * used (an eviction afterwards takes the blocks it would have taken without it), no statistic
 * counts it. Like the create it first processes completions (see COMPLETIONS) and, reaching
 * the peers, refreshes their indexes. Thread-safe as every call (under the engine's lock).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/tokens/memory_tokens/disk_tokens/peer_tokens,
 * n_tokens 0 or > max_seq_tokens); then nothing is written.
 * Cost: kvc_seq_create's lookup (the prompt's hashes up to the first block found nowhere, one
 * index lookup per block, one tier lookup more per block memory misses); nothing allocated.
 */
kvc_status kvc_prefix_lookup(kvc_engine *e, const int32_t *tokens, size_t n_tokens, uint64_t salt,
                             size_t *memory_tokens, size_t *disk_tokens, size_t *peer_tokens);

/**
 * The dry run of kvc_seq_create_chunked(e, new seq, tokens, n_tokens, salt, commit_tokens):
 * returns KVC_OK when that create would succeed now and leave room to append reserve_tokens
 * more tokens after it (decode room; 0: the create alone), and KVC_ERR_OUT_OF_MEMORY (the
 * create's message) when not. It runs the create's own lookup and capacity check (one function
 * both use), so the answer is exact: with reserve_tokens 0, a create made right after it (no
 * call between) succeeds exactly when it returned KVC_OK, in both layouts, with and without a
 * disk tier (a prefix block found only on disk needs a free block to be read into; one cached
 * in memory that no live sequence holds is taken out of the free pool). Writes on KVC_OK and
 * KVC_ERR_OUT_OF_MEMORY: *cached_tokens, what the create would report cached (as
 * kvc_prefix_lookup's sum), and *short_tokens, the memory missing in tokens (0 on KVC_OK):
 * missing blocks x block_tokens, or, contiguous, missing page groups x the tokens a page
 * holds (rounded up); memory freed elsewhere (kvc_seq_free of sequences holding that much
 * alone, kvc_seq_swap_out) makes it fit. When every sequence slot is in use (max_seqs) it is
 * refused with both 0 (no lookup made). Budgeting: admit while it returns KVC_OK, then
 * create; for a batch, create each admitted request before asking for the next (each create
 * changes the pool). It does not check seq ids (KVC_ERR_EXISTS is the create's alone).
 * Changes nothing: no block or disk slot pinned, read or made recently used, no statistic or
 * event, nothing allocated; like the create it first processes completions (COMPLETIONS),
 * and when the answer is no while kvc_seq_swap_out_async calls or freed sequences' reads are
 * pending it waits for them, as the create does, and asks again.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/tokens/cached_tokens/short_tokens, n_tokens 0 or
 * > max_seq_tokens, commit_tokens 0, commit_tokens or reserve_tokens > PTRDIFF_MAX, the held
 * tokens plus reserve_tokens past max_seq_tokens); then nothing is written. An unknown salt
 * is no error (a miss). Version node KVC_1.4.
 * Cost: kvc_prefix_lookup's (the prompt's hashes, one index lookup per block, a tier lookup
 * more per block memory misses), plus one reference count read per cached block and,
 * contiguous, one per page of the held and reserved tokens; nothing allocated.
 */
kvc_status kvc_prefix_admit(kvc_engine *e, const int32_t *tokens, size_t n_tokens, uint64_t salt,
                            size_t commit_tokens, size_t reserve_tokens, size_t *cached_tokens,
                            size_t *short_tokens);

/**
 * Chunked admission (vLLM's allocate_slots for one chunk): kvc_seq_create_salted's lookup over
 * the whole prompt tokens[0 .. n_tokens-1] (*cached_tokens as that create reports it: a
 * multiple of block_tokens, at most n_tokens - 1; salt 0: no salt), but `seq` holds only the
 * cached prefix and at most commit_tokens (>= 1) prompt tokens after it:
 *     *held_tokens = min(n_tokens, *cached_tokens + commit_tokens) > *cached_tokens
 * (kvc_seq_length). Memory is committed for those alone: cached blocks are shared, the
 * others allocated, so a prompt longer than the free memory is admitted when its cached
 * prefix and first chunk fit (kvc_seq_create refuses it whole). The server computes K/V for
 * tokens *cached_tokens .. *held_tokens - 1, then appends the rest of the prompt with
 * kvc_seq_append, one chunk per forward pass (an append looks nothing up: the prompt's
 * blocks past the cached prefix are computed). The held prompt's full blocks are indexed as
 * kvc_seq_create indexes a prompt's (now, or with index_on_schedule through
 * kvc_seq_schedule), appended ones as an append fills them, under the same chained hashes
 * as if created whole, so later prompts hit them alike (what stays cached under memory
 * pressure may differ: in the contiguous layout a create evicts to map long runs, appends
 * take single page groups; in both layouts REMOVED events interleave with the chunks'
 * appends instead of preceding one create's). With index_on_schedule, append each
 * chunk when its pass is scheduled: the append indexes the held blocks not scheduled yet,
 * then the ones it fills (as kvc_seq_schedule to its end would). Disk-tier blocks in the
 * prefix are read back asynchronously (kvc_seq_ready), and kvc_seq_prefix_sources and
 * kvc_stats count the lookup over the whole prompt (prefix_query_tokens grows by n_tokens),
 * as for kvc_seq_create. commit_tokens >= n_tokens - *cached_tokens is kvc_seq_create_salted.
 * Returns kvc_seq_create's statuses (KVC_ERR_OUT_OF_MEMORY when the held tokens do not fit)
 * and KVC_ERR_INVALID_ARGUMENT for NULL held_tokens, commit_tokens 0 or > PTRDIFF_MAX; a
 * failure creates nothing and writes no output. Cost: kvc_seq_create's hashing and lookup
 * of the whole prompt, the commits of the held tokens only.
 */
kvc_status kvc_seq_create_chunked(kvc_engine *e, uint64_t seq, const int32_t *tokens,
                                  size_t n_tokens, uint64_t salt, size_t commit_tokens,
                                  size_t *cached_tokens, size_t *held_tokens);

/**
 * Appends tokens[0 .. n_tokens-1] to `seq` (decode) and commits their memory; the server
 * then writes their K/V. n_tokens 0 changes nothing (tokens may then be NULL) and returns
 * KVC_OK, or KVC_ERR_NOT_FOUND when seq is not live.
 * A block that becomes full enters the prefix index (KVC_EVENT_BLOCK_STORED); with
 * index_on_schedule, after the prompt's blocks not scheduled yet (as kvc_seq_schedule to the
 * length before the append). A block of the same tokens as an indexed one (another sequence
 * decoding the same tokens) stays out, and takes that one's place, with no event, when it
 * leaves the index while `seq` still holds this one untouched, so the chain stays reachable.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, NULL tokens with n_tokens > 0, length would
 * exceed max_seq_tokens, seq swapped out, a token-evicting seq's positions would pass
 * 2^31 - 1: kvc_seq_positions reports them as int32), KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read
 * spoiled seq, see kvc_seq_ready), KVC_ERR_OUT_OF_MEMORY (nothing appended; also when a
 * sequence with eviction state would pass the state's capacity and the grown state cannot be
 * allocated, see TOKEN EVICTION; while kvc_seq_swap_out_async calls are pending, or freed
 * sequences' memory waits for their reads, it first waits for them, see there and
 * kvc_seq_free). Allocates nothing outside memory_bytes, except that such an append
 * reallocates the eviction state (O(rows x capacity), amortised over the capacity's tokens).
 * Cost: a lock, O(n_tokens) hashing and, per block filled, an index insert; paged, a free
 * block per block begun (about 66 ns per one-token call, no system call but a commit when
 * the pool has no committed group left). Contiguous: an append whose tokens reach a page
 * its sequence has not mapped yet maps that page in each of the 2 x num_layers tensors (one
 * mmap each, ~7 us, under the engine's lock, plus a commit of new memory), so it is paid
 * once per page_bytes / token_bytes tokens: with 64 KiB pages, 2 KiB per layer per token
 * (8 KV heads x 128 dims, fp16) and 32 layers, one append in 32 maps 64 pages; measured
 * mean 22.7 us per one-token append (5.0 us at 8 layers), p50 0.08 us, p99 0.7-1.0 ms
 * (docs/memory.md, speculative decoding). Pages mapped ahead (a truncation's) are free.
 * From Python the call costs more than its work (a review's ctypes/cffi driver, 2026-11-25:
 * CPython 3.11, paged, 8 layers, 64 sequences of 512 tokens, 10^5 calls timed in a loop, the
 * range over runs on a shared 2-core machine): C 61-117 ns per one-token append; ctypes with
 * argtypes set and the token array and out-pointers preallocated 1.27-1.49 us; cffi's ABI mode
 * 0.57-0.86 us; a wrapper that builds a numpy array per call ~10 us. kvc_seq_block_table (~130
 * blocks): C 29-69 ns, ctypes 1.9-2.0 us, cffi 0.68-0.85 us; kvc_block_kv: C 19 ns, ctypes 1.9
 * us. A decode step of 256 sequences (append one token + re-read the block table each): ctypes
 * 0.36 ms, cffi 0.19 ms, per-call wrappers 2.97 ms. So a Python server sets argtypes/restype
 * once, preallocates its arrays and out-pointers (byref of a kept c_size_t), binds its hot
 * calls with cffi, and re-reads a block table only when it changed (kvc_seq_block_table says
 * when).
 */
kvc_status kvc_seq_append(kvc_engine *e, uint64_t seq, const int32_t *tokens, size_t n_tokens);

/**
 * Creates `child` holding all of `parent`'s tokens, sharing their memory copy-on-write
 * (beam search, parallel sampling). Both then grow independently. Episodic offload: the
 * child inherits the parent's offloaded tokens (a kvc_seq_focus of the child restores them
 * whatever the parent does); the disk slots holding them are shared, not copied, and the
 * parent's open record (see kvc_seq_compact) is copied into a buffer of the child's, not
 * written (a slot write only when every open-record buffer is owned, as for a compaction).
 * With a disk tier the child shares the parent's kvc_seq_ready verdict: paged, a read still
 * filling the parent that fails later fails the child too; contiguous, the fork first waits
 * for the parent's reads (it copies the page holding the boundary).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, parent swapped out), KVC_ERR_NOT_FOUND (parent
 * not live), KVC_ERR_EXISTS (child live, or child == parent), KVC_ERR_IO (a failed disk read
 * spoiled the parent, see kvc_seq_ready), KVC_ERR_OUT_OF_MEMORY (also when the child's
 * copy of the parent's eviction state cannot be allocated, see TOKEN EVICTION; nothing
 * changed; while kvc_seq_swap_out_async calls are pending, or freed sequences' memory waits
 * for their reads, it first waits for them, see there and kvc_seq_free).
 */
kvc_status kvc_seq_fork(kvc_engine *e, uint64_t parent, uint64_t child);

/**
 * Frees `seq`: its id may be reused at once; its full blocks stay in the prefix index (LRU)
 * for later prompts, the rest of its memory returns to the pool. They join the LRU last block
 * first, as vLLM frees a request's blocks, so a prompt's later blocks are evicted before the
 * earlier ones more prompts share. Pointers and block ids obtained for it become invalid. With
 * a disk tier it first takes back the sequence's disk reads still queued for a staging buffer
 * (never submitted: those blocks leave the prefix index, their bytes stay on disk) and never
 * waits for the device: when reads into its memory are still in flight (submitted ones, a
 * queued read of a block another sequence shares, episodic record reads), `seq` is gone at
 * once (its id reusable, not counted in kvc_stats.sequences) but its memory stays held,
 * counted in blocks_used, until they landed; the first call that processes completions
 * afterwards (see COMPLETIONS) releases it, so no read lands in freed or reused memory (an
 * allocation that finds no room meanwhile waits for it without the engine's lock, as for a
 * pending kvc_seq_swap_out_async; so does one that finds every sequence slot (max_seqs) taken,
 * such a freed sequence's included); a swapped-out sequence releases its disk slots. It waits
 * for a kvc_seq_swap_out of `seq` in progress on another thread; a pending
 * kvc_seq_swap_out_async of it is cancelled: its memory is released at once, its disk slots
 * when their writes complete (and a failure of it not yet reported is forgotten).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e), KVC_ERR_NOT_FOUND (not live; also a double free).
 */
kvc_status kvc_seq_free(kvc_engine *e, uint64_t seq);

/**
 * Frees `seq` like kvc_seq_free when the server wrote its K/V only for tokens below
 * computed_tokens: a request cancelled, or failed, before its prefill finished (0: nothing
 * was computed). computed_tokens counts from the prompt's start, and the *cached_tokens that
 * kvc_seq_create reported are computed: pass at least that many, since a smaller value takes
 * those blocks out of the prefix index too, though their K/V is valid. A fork's child
 * (kvc_seq_fork made no create) holds its parent's blocks as they were at the fork: pass
 * at least the parent's computed length then, or its valid blocks leave the index.
 * kvc_seq_create indexed its prompt's blocks before they were computed (see
 * WRITING K/V; with index_on_schedule, kvc_seq_schedule did, and unscheduled blocks were
 * never indexed), so kvc_seq_free would leave them cached with bytes nobody wrote; here the
 * blocks it holds from the one holding token computed_tokens on leave the prefix index
 * (KVC_EVENT_BLOCK_REMOVED) and no later prompt is served them. Another live sequence that
 * hit them meanwhile keeps them: it was scheduled to read what this one would compute, so
 * the server must not run it on them either, and the engine does not say which sequences
 * those are: with index_on_schedule 0 (the default) only a server that knows which requests
 * share a prefix can tell. A server that preempts, cancels or chunks a prefill between
 * kvc_seq_create and its pass should use index_on_schedule 1 (see WRITING K/V), where no
 * other sequence hits a block before its pass is scheduled. For a swapped-out sequence
 * (computed before it was preempted; also while its kvc_seq_swap_out_async is pending)
 * computed_tokens is only range-checked. kvc_seq_ready's "free it and create it again"
 * after a failed read needs no abort: the engine drops those blocks itself.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, computed_tokens > kvc_seq_length; nothing
 * changed), KVC_ERR_NOT_FOUND. Cost: O(blocks of seq).
 */
kvc_status kvc_seq_abort(kvc_engine *e, uint64_t seq, size_t computed_tokens);

/**
 * Shrinks `seq` to its first n_tokens positions (1 .. the positions it has seen: its length, or
 * with token-eviction state the next position an append would take; that count is a no-op):
 * rolls back tokens the server appended and does not keep, such as speculative-decoding drafts
 * the target model rejected, or an answer to regenerate. Later kvc_seq_append calls take
 * positions from n_tokens on. A server decoding at position P that appended k drafts (P ..
 * P+k-1) and accepted a of them calls kvc_seq_truncate(e, seq, P + a), compacted or not.
 * K/V of the kept tokens are unchanged; the server rewrites the positions it appends again.
 * Without eviction state, or observed but never compacted (slot i holds position i):
 * Blocks wholly past the cut are released, last first (paged: a block the prefix index holds
 * stays cached, its K/V being those of the tokens it was hashed from, unless the block the
 * cut falls in leaves the index: then, as always in the contiguous layout, one only this
 * sequence holds leaves the index too, KVC_EVENT_BLOCK_REMOVED before the cut block's;
 * contiguous because its bytes are the sequence's pages, paged because no chain reaches it.
 * A block another sequence holds, or a cached one of another branch, stays indexed, its
 * parent then possibly not). The block the cut falls in leaves the prefix index when only this
 * sequence holds it; when a fork or another prompt shares it, this sequence gets its own copy
 * of the kept tokens (contiguous: the page holding the cut is copied when a fork maps it or a
 * block another sequence holds lies on it). Blocks later appends fill are indexed as before
 * when the cut falls in the last partial or last full block; a cut further back stops this
 * sequence's appends from being indexed (the engine keeps only those blocks' tokens).
 * Compacted (kvc_seq_compact): every layer, and every KV head's row per head, keeps exactly its
 * tokens at positions below n_tokens (kvc_seq_positions; tokens a compaction evicted have
 * nothing to remove); kept tokens past the layer's new length move into the holes below it,
 * bytes and all, as a compaction places them (none moves when the cut lies past every
 * compacted position, the speculative-decoding case). The sequence's length becomes its
 * longest layer; blocks past it are released, and blocks or pages that moved tokens or later
 * appends write are copied first when a fork or the prefix index shares them. Scores of the
 * removed tokens go (attention observed while they were there stays credited to the others);
 * a following observe and compaction choose as for a sequence that never had them. Episodic:
 * segments wholly past the cut are dropped and the others end there; tokens offloaded to the
 * disk tier at or past the cut are dropped from it.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, n_tokens 0 or beyond the positions seen, a
 * swapped-out sequence, one whose disk reads (prefix hit, swap-in, episodic restores) have not
 * all landed: call once kvc_seq_ready says 1, a cut into prompt blocks not scheduled yet with
 * index_on_schedule), KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read spoiled seq, see
 * kvc_seq_ready), KVC_ERR_UNSUPPORTED (eviction state only: per head,
 * the KV heads of a layer would keep different numbers of tokens, which only a cut below
 * positions a compaction decided on can cause; a layer would keep no token; an episodic
 * segment lying wholly past the cut was already clustered by kvc_seq_focus),
 * KVC_ERR_OUT_OF_MEMORY (a block or page the truncation must copy finds no room, or the OS
 * refuses its memory or mapping (see ERRORS), once no
 * asynchronous swap-out is pending: see kvc_seq_swap_out_async); each changes nothing.
 * Pages (contiguous) past the new length leave the sequence's budget at once but stay mapped
 * and committed for the appends that usually follow (a decoder's next drafts): memory needs
 * or kvc_engine_trim give them back, as for a freed sequence's pages.
 * Cost: one release per block past the cut; contiguous, only when the cut's page is held
 * elsewhere, one page copy per tensor. With eviction state: a cut past every compacted
 * position (the drafts since the last compaction or focus) adds O(layers x heads); a deeper
 * one a pass over each row's positions and the moves and copies of a compaction.
 */
kvc_status kvc_seq_truncate(kvc_engine *e, uint64_t seq, size_t n_tokens);

/**
 * index_on_schedule (see WRITING K/V): the server has scheduled the tokens of `seq` below
 * `tokens` for computation, in this forward pass or an earlier one. Every full block of the
 * prompt below `tokens` that is not indexed yet enters the prefix index now, in order, with
 * KVC_EVENT_BLOCK_STORED (KVC_TIER_MEMORY) and its parent's hash, as kvc_seq_create would
 * have indexed it (a block whose hash another block already holds stays out). Monotonic: a `tokens` at or
 * below an earlier call's indexes nothing more. Intended use: once per forward pass, with
 * the tokens computed after that pass (*cached_tokens plus the chunks so far). With
 * index_on_schedule 0, and after what ends the schedule (see WRITING K/V), it checks its
 * arguments and changes nothing.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, tokens > kvc_seq_length, seq swapped out),
 * KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read spoiled seq, see kvc_seq_ready); then
 * nothing changed. Cost: a lock and O(1), plus one index insertion
 * (and one event) per block indexed.
 */
kvc_status kvc_seq_schedule(kvc_engine *e, uint64_t seq, size_t tokens);

/** Stores the number of tokens `seq` holds in *n_tokens.
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_tokens), KVC_ERR_NOT_FOUND. */
kvc_status kvc_seq_length(kvc_engine *e, uint64_t seq, size_t *n_tokens);

/**
 * Where the prompt tokens kvc_seq_create reported cached for `seq` came from, per request
 * (as vLLM's KV connectors report external tokens): *memory_tokens found in this engine's
 * memory (shared, nothing read), *disk_tokens read back from its own disk tier (offload_dir),
 * *peer_tokens read from peers' tiers (peer_offload_dirs). Each is a multiple of block_tokens,
 * and they sum to that create's *cached_tokens; blocks found on disk that the engine left to
 * the prefill (prefill_tokens_per_s; kvc_stats.disk_declined_hit_tokens) are not cached and in
 * none. Without a disk tier every cached token is a memory token. It describes the create, not
 * later history: kvc_seq_swap_out / kvc_seq_swap_in, kvc_seq_truncate and appends leave it; a
 * kvc_seq_fork child reports its parent's (it was created by no prompt lookup). Valid while
 * the sequence exists: after kvc_seq_free or kvc_seq_abort, KVC_ERR_NOT_FOUND.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/memory_tokens/disk_tokens/peer_tokens),
 * KVC_ERR_NOT_FOUND; then nothing is written. Cost: a lock and O(1); a create pays one store
 * for it.
 */
kvc_status kvc_seq_prefix_sources(kvc_engine *e, uint64_t seq, size_t *memory_tokens, size_t *disk_tokens,
                                  size_t *peer_tokens);

/* ---------------------------------------------------------------------------------------
 * K/V memory
 * --------------------------------------------------------------------------------------- */

/**
 * KVC_LAYOUT_CONTIGUOUS: stores the base of `seq`'s K and V ranges for `layer` in *k and *v.
 * Token t is at byte t * token_bytes; bytes of tokens below kvc_seq_length are backed.
 * The pointers stay valid until `seq` is freed or the engine destroyed (appends never move
 * them), except while `seq` is swapped out (kvc_seq_swap_out, _async): its pages are
 * released then, so the server must not touch the ranges until kvc_seq_swap_in and
 * kvc_seq_ready says 1 (call kvc_seq_kv again then). Only the pages holding the tokens
 * below kvc_seq_length (and pages mapped ahead) are mapped: touching the rest of the range,
 * or any of it while swapped out, faults (SIGSEGV). So a binding that wraps the range (a numpy
 * view) covers only tokens [0, kvc_seq_length), and wraps it again after appends and after
 * a swap-in. Cost: a lock and a table lookup.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/k/v, layer >= num_layers, seq swapped out),
 * KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read spoiled seq, see kvc_seq_ready),
 * KVC_ERR_UNSUPPORTED (paged layout).
 */
kvc_status kvc_seq_kv(kvc_engine *e, uint64_t seq, uint32_t layer, void **k, void **v);

/**
 * KVC_LAYOUT_PAGED (also metadata-only engines, where the ids name no memory): writes
 * `seq`'s block ids into blocks[0 .. min(capacity, count)-1] and
 * the full count, ceil(length / block_tokens), into *n_blocks. Entry i holds the sequence's
 * tokens i*block_tokens ..; ids are valid in every layer (see kvc_block_kv).
 * When capacity < count: the first `capacity` ids are written, *n_blocks is the full count,
 * and the call returns KVC_ERR_BUFFER_TOO_SMALL. `blocks` may be NULL only when capacity is
 * 0 (a size query: KVC_ERR_BUFFER_TOO_SMALL with the count).
 * The table changes on: kvc_seq_append, only from the old last entry on (new blocks after
 * it; the old last one itself only when partly filled and shared, as after a fork, and then
 * only by the first side to append, which gets a copy), except after a compaction with
 * adaptive budgets left a layer shorter than the sequence (kvc_seq_layer_length): then from
 * the block of the shortest layer's length on (shared blocks there are copied);
 * kvc_seq_truncate (entries past the new length go; a new last block partly kept and shared
 * is copied); kvc_seq_compact (blocks it writes that are shared are copied,
 * blocks past the new length go); kvc_seq_swap_in (every entry: new blocks, or cached ones
 * shared). kvc_seq_fork changes neither the parent's table nor, until it appends, the
 * child's copy of it. Re-read the table after those; entries an append leaves are the same
 * ids (tested by BlockTableStabilityTests, no change seen in ~52,000 server appends).
 * Cost: a lock and a copy of the whole table under it, O(blocks of seq); no allocation.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_blocks, NULL blocks with capacity > 0, seq
 * swapped out), KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read spoiled seq, see
 * kvc_seq_ready), KVC_ERR_UNSUPPORTED (contiguous layout), KVC_ERR_BUFFER_TOO_SMALL.
 */
kvc_status kvc_seq_block_table(kvc_engine *e, uint64_t seq, int32_t *blocks, size_t capacity,
                               size_t *n_blocks);

/**
 * KVC_LAYOUT_PAGED: stores the base of block `block`'s K and V in `layer` in *k and *v;
 * token i of the block is at byte i * token_bytes (block_tokens * token_bytes bytes each).
 * The addresses are fixed for the engine's lifetime; the bytes belong to whichever sequence
 * (or cached prefix) holds the block — use ids from a fresh kvc_seq_block_table.
 * Cheap (a lock and arithmetic); call it per block per layer, or cache the addresses.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/k/v, block < 0 or >= blocks_total, a free block
 * that no sequence or cache holds, layer >= num_layers), KVC_ERR_UNSUPPORTED (contiguous
 * layout, metadata-only engine).
 */
kvc_status kvc_block_kv(kvc_engine *e, int32_t block, uint32_t layer, void **k, void **v);

/**
 * KVC_LAYOUT_PAGED (KVC_1.2): `layer`'s K blocks as one array and its V blocks as another,
 * for kernels that take block ids as indexes into [num_blocks, ...] tensors (vLLM's and
 * FlashInfer's paged attention): stores K's base in *k_base, V's in *v_base and the distance
 * between consecutive block ids in *block_stride, so that block b's K is at
 * *k_base + b * *block_stride and its V at *v_base + b * *block_stride (what kvc_block_kv
 * returns for b), for every block id 0 .. kvc_stats.blocks_total - 1 and the engine's whole
 * life: the memory is one mapping made at kvc_engine_create (huge pages, a NUMA node and
 * kvc_engine_trim change what is committed, never an address). *block_stride is the block's
 * bytes per tensor (block_tokens x token_bytes) when blocks fill their pages exactly (every
 * power-of-two shape, e.g. 16 tokens x 8 KV heads x 128 dims fp16 on 4 KiB to 2 MiB pages),
 * or a whole page group's bytes when at most one block fits a page group (blocks larger
 * than half a page, each padded to whole pages: more than the block's bytes unless they
 * are a multiple of page_bytes). The bytes of a free block belong to nobody.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/k_base/v_base/block_stride, layer >= num_layers),
 * KVC_ERR_UNSUPPORTED (contiguous layout, metadata-only engine, or blocks of half a page or
 * less that do not divide it: padded within their pages, no single stride; use
 * kvc_block_kv per block or a block size dividing page_bytes), nothing written then.
 * Thread-safe; no lock, no allocation.
 */
kvc_status kvc_layer_kv_layout(kvc_engine *e, uint32_t layer, void **k_base, void **v_base,
                               uint64_t *block_stride);

/* ---------------------------------------------------------------------------------------
 * Batched decode-step calls (KVC_1.3)
 *
 * BATCHES
 *   One call for a decode step's per-sequence work, for hosts that pay per foreign call
 *   (Python ctypes ~1.3-2 us, cffi ~0.6-0.9 us, against ~0.07 us for the work itself).
 *   Entry i is exactly the single call for seqs[i] (kvc_seq_append of one token,
 *   kvc_seq_block_table into row i), made in order i = 0, 1, ..., n-1 under the same
 *   rules, so an entry sees what the entries before it did (a sequence listed twice is
 *   appended twice; an entry after a failed one runs as if the failed one had not been
 *   made). Entries are independent: a failing entry changes nothing for its sequence (the
 *   single call's guarantee) and does not stop the others. statuses[i] gets the entry's
 *   status, the one the single call would have returned there.
 *   Returns KVC_OK when every entry succeeded; otherwise the status of the first failing
 *   entry, with kvc_last_error naming that entry's index and sequence, its message and how
 *   many entries failed (then read statuses, e.g. to preempt exactly the sequences whose
 *   append is KVC_ERR_OUT_OF_MEMORY).
 *   The whole call is refused, with KVC_ERR_INVALID_ARGUMENT and nothing read past the
 *   arguments or written (statuses included), for NULL e, a NULL array with n > 0, n above
 *   max_seqs (no step holds more sequences; a larger n is garbage) or above PTRDIFF_MAX.
 *   So with valid arrays and n <= max_seqs every statuses[i] is written. n 0 returns
 *   KVC_OK (the arrays may then be NULL). The calls take the engine's lock once per entry,
 *   as the single calls do; other threads' calls may run between entries.
 *   Measured, one decode step of 256 sequences (1024-token prompts; one token appended and
 *   the 65-90-block table re-read per sequence; loaded 2-core VM, 2026-11-25): Python
 *   ctypes (argtypes set, arrays preallocated) 0.36-0.37 ms with single calls, 0.017-0.018
 *   ms batched (~20x; cffi's ABI mode with single calls: 0.19 ms); C 15-16 us single,
 *   14.4-15.5 us batched (the work itself, ~57 ns per sequence). tools/repro/decodestep.c
 *   and tools/repro/decode_step.py reproduce them.
 * ------------------------------------------------------------------------------------- */

/**
 * Appends tokens[i] (one token) to seqs[i] for i = 0 .. n-1 as kvc_seq_append(e, seqs[i],
 * &tokens[i], 1) would, each entry independent (BATCHES); statuses[i] gets its status
 * (KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY, KVC_ERR_IO, KVC_ERR_INVALID_ARGUMENT for a
 * swapped-out sequence or one at max_seq_tokens, ... as kvc_seq_append). Returns KVC_OK, the
 * first failing entry's status, or KVC_ERR_INVALID_ARGUMENT for the whole call (NULL e,
 * NULL seqs/tokens/statuses with n > 0, n > max_seqs): see BATCHES.
 * Cost: the entries' kvc_seq_append costs without the per-call overhead; allocates nothing
 * the single calls would not, except a failure's message. Version node KVC_1.3.
 */
kvc_status kvc_seq_append_batch(kvc_engine *e, const uint64_t *seqs, const int32_t *tokens,
                                size_t n, kvc_status *statuses);

/**
 * KVC_LAYOUT_PAGED: the block tables of seqs[0 .. n-1] into one caller array of n rows of
 * row_capacity ids (vLLM's BlockTable shape, int32_t tables[n][row_capacity]): entry i is
 * kvc_seq_block_table(e, seqs[i], &tables[i * row_capacity], row_capacity, &n_blocks[i]),
 * each entry independent (BATCHES); statuses[i] gets its status. So row i holds the first
 * min(n_blocks[i], row_capacity) ids; n_blocks[i] is the full count on success and on
 * KVC_ERR_BUFFER_TOO_SMALL (row too short: its first row_capacity ids written), untouched
 * on other failures (KVC_ERR_NOT_FOUND, KVC_ERR_IO, KVC_ERR_INVALID_ARGUMENT for a
 * swapped-out sequence), whose row is untouched too. Padding: a row's entries past its
 * blocks are not written (they keep what the caller left there; use n_blocks[i], or fill
 * the array with -1 once), so the cost follows the blocks, not n x row_capacity.
 * Returns KVC_OK, the first failing entry's status, or for the whole call with nothing
 * written: KVC_ERR_UNSUPPORTED (contiguous layout, as kvc_layer_kv_layout; even with n 0),
 * KVC_ERR_INVALID_ARGUMENT (NULL e, NULL seqs/n_blocks/statuses with n > 0, NULL tables
 * with n > 0 and row_capacity > 0, n > max_seqs, n x row_capacity x 4 bytes past
 * PTRDIFF_MAX). Cost: a lock and a copy of the table per entry, no allocation on success.
 * Version node KVC_1.3.
 */
kvc_status kvc_seq_block_tables(kvc_engine *e, const uint64_t *seqs, size_t n, int32_t *tables,
                                size_t row_capacity, size_t *n_blocks, kvc_status *statuses);

/* ---------------------------------------------------------------------------------------
 * Token eviction
 *
 * TOKEN EVICTION
 *   The server reports attention (kvc_seq_observe, per layer, after each forward step); the
 *   sequence's policy (kvc_config.eviction_policy, or kvc_seq_set_eviction) decides which
 *   tokens stay; kvc_seq_compact moves their K/V in place and releases what is no longer
 *   needed. Policies see only what was observed so far.
 *   After a compaction layer l holds kvc_seq_layer_length(l) tokens in slots 0 .. n-1 of its
 *   memory (contiguous: from byte 0 of its ranges; paged: the first blocks of the block
 *   table), each with exactly the bytes it had; kvc_seq_positions gives the original
 *   position of each slot (for position ids). Kept slots below n stay; kept slots past n
 *   fill the holes in slot order, so slots are not sorted by position and a step evicting e
 *   tokens moves at most e tokens per layer. Layers may differ in length (adaptive
 *   budgets); kvc_seq_length is the longest. kvc_seq_append then adds the new tokens at
 *   slots layer_length .. in every layer: write layer l's K/V there (re-read the block
 *   table: compaction changes it).
 *   Prefix cache: blocks whose bytes a compaction rewrites or drops and that no other
 *   sequence holds leave the index (KVC_EVENT_BLOCK_REMOVED) and their memory is released,
 *   so a compacted prompt stops serving later prompts unless another sequence shares it;
 *   blocks another sequence also holds are copied before being written (the shared block
 *   keeps its bytes and stays indexed);
 *   contiguous, so are pages another sequence maps or a block other than the sequence's
 *   own unwritten ones holds. A compacted sequence indexes no further blocks. A
 *   kvc_seq_compact whose budget every layer fits evicts nothing and compacts nothing: the
 *   sequence's blocks keep entering the index and kvc_seq_set_eviction may still change
 *   its policy, so a server may call it every step from the first.
 *   Eviction state (memory outside memory_bytes): a sequence gets one at its first
 *   kvc_seq_observe (any policy but KVC_EVICTION_NONE), kvc_seq_compact, kvc_seq_add_segment,
 *   kvc_seq_focus or kvc_seq_set_layer_sensitivity; kvc_seq_set_eviction creates or
 *   replaces it (for any policy, KVC_EVICTION_NONE included: it holds the override),
 *   kvc_seq_fork copies it, kvc_seq_free releases it. It takes
 *   4 x rows x capacity x (3 + L + V + E) bytes, rows = num_layers x num_kv_heads per head
 *   (num_layers otherwise), capacity = the sequence's length rounded up to 1024 x 2^k slots
 *   (at most max_seq_tokens), L = 1 for TOVA, V = 1 with normalized_scores (H2O, episodic),
 *   E = episodes + 1 for episodic (else 0 each); plus 1280 bytes per row for H2O and
 *   episodic (low-score records), (4 x num_kv_heads + 13) x capacity + 4096 bytes of
 *   scratch, and with episodic offload 20 x capacity bytes at the first kvc_seq_focus and
 *   the table of offloaded tokens at the first compaction (up to 48 x rows x capacity bytes,
 *   reserved then for rows x capacity row tokens in full records). A compaction or focus
 *   grows the table (doubling, amortised) only past the capacity or when the records the
 *   sequence holds at once outnumber that reservation: a focus's restores leave records
 *   partly live (a record goes when its last token does). Bound: the records held at once
 *   are at most min(the sequence's row tokens on disk or being restored, the tier's slots)
 *   + 1, and the table takes at most 32 bytes per token a held record can hold (a slot
 *   payload / (2 x row-token bytes) each) and 64 per held record, plus the reservation.
 *   A kvc_seq_focus that re-clusters (segments added since the last one, an episode
 *   observed) holds a copy of the episodes' scores meanwhile: 4 x rows x capacity x
 *   episodes bytes more. Otherwise a focus allocates nothing but that table's growth.
 *   E.g. 80 layers x 8 KV heads per head, episodic with 64 episodes: 640 rows x 1024 slots
 *   x 68 x 4 bytes = 178 MB per sequence of up to 1024 tokens, 357 MB up to 2048. An append
 *   that takes a sequence past its capacity reallocates the state at twice the capacity
 *   (both are held during the copy: amortised O(1) per token). When the process may not
 *   have that memory (RLIMIT_AS, a cgroup limit, overcommit off) the call returns
 *   KVC_ERR_OUT_OF_MEMORY, the message naming the bytes, and changes nothing.
 * --------------------------------------------------------------------------------------- */

/**
 * Reports one step's attention for `layer` of `seq`: scores is row-major [head][token],
 * n_heads (= num_kv_heads) rows of n_tokens (<= kvc_seq_layer_length; slot order), each the
 * step's attention probabilities summed over the step's queries (the number of queries is
 * read from the first head's row sum, at most n_tokens: the step's queries are among the
 * tokens it sees). In per-head mode each head keeps its own scores;
 * otherwise they are summed over heads. scores may be NULL only when n_tokens is 0.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/scores, layer, n_heads != num_kv_heads, more
 * tokens than the layer holds, a NaN, infinite or negative score, finite scores whose sum
 * over the call's heads and tokens overflows a float), KVC_ERR_NOT_FOUND,
 * KVC_ERR_OUT_OF_MEMORY (the first call of an evicting sequence cannot allocate its eviction
 * state, see TOKEN EVICTION); then nothing changed. Cost: one pass over the scores; the
 * first call of an evicting sequence allocates its eviction state, later calls nothing.
 */
kvc_status kvc_seq_observe(kvc_engine *e, uint64_t seq, uint32_t layer, const float *scores,
                           uint32_t n_heads, size_t n_tokens);

/**
 * Applies the sequence's policy down to budget_tokens per layer (per head in per-head mode;
 * the mean over layers with adaptive budgets), compacts K/V in place and releases the
 * blocks/pages past the new length (committed bytes fall, not below what kvc_engine_reserve
 * reserved since the last kvc_engine_trim). KVC_EVICTION_NONE: no change.
 * Episodic offload (KVC_EVICTION_EPISODIC with a disk tier, per layer or per head): the
 * evicted tokens' K/V (K then V, exactly the bytes: of every KV head per layer; per head,
 * each head's own evicted tokens, its head_dim * dtype_bytes slice of the slot) are written
 * to the disk tier, packed into slots private to the sequence and the forks it makes later
 * (never prefix hits, freed with the last of them), and the tokens stay candidates for a
 * later kvc_seq_focus. Whole slots' worth (num_layers * block_tokens tokens per layer,
 * num_kv_heads times as many head tokens per head) are written at once; the rest go to
 * the sequence's open record, a buffer of one slot payload that later compactions fill
 * and that is written when full. At most min(max_seqs,
 * offload_queue_depth) records are open engine-wide (their buffers: outside memory_bytes,
 * at most that many slot payloads in one private mapping, which RLIMIT_AS and overcommit
 * mode 2 count: made by kvc_engine_create when eviction_policy is KVC_EVICTION_EPISODIC,
 * else by the first kvc_seq_set_eviction that makes a sequence episodic, never by an
 * engine without an episodic sequence; bound to numa_node, their pages faulted in on first
 * use); when none is free, the least
 * recently filled one is written partly filled. kvc_seq_focus restores open-record tokens
 * from memory, kvc_seq_fork copies the parent's open record into the child's, kvc_seq_free
 * discards it. A token whose slot cannot be written (disk full, tier full, or a write error
 * once it is processed) is dropped as without a tier and reported once by kvc_seq_ready.
 * Without a tier evicted tokens are dropped. Waits for the sequence's pending
 * disk reads first (prefix hits, swap-in, restores), in every policy but KVC_EVICTION_NONE
 * (which returns at once, moving nothing): compaction moves bytes; offloading, also for a
 * free staging buffer (see COMPLETIONS); both without the engine's lock.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, budget_tokens 0, seq swapped out),
 * KVC_ERR_NOT_FOUND, KVC_ERR_IO (a failed disk read spoiled seq, see kvc_seq_ready),
 * KVC_ERR_OUT_OF_MEMORY (a shared block or page must be copied and the
 * budget has no room, or the OS refused a copy's memory: see ERRORS; or the first call of a
 * sequence never observed cannot allocate its eviction state, see TOKEN EVICTION; while
 * asynchronous swap-outs or freed sequences' reads are pending it first waits for them);
 * then nothing changed. Memory released: the pages and blocks past the new length go back to
 * the OS down to the reservation (kvc_engine_reserve), except that one free page group stays
 * committed pool-wide, so that a server compacting one sequence back to a budget on a group
 * edge every step does not give a group back and commit (zero) it again each step (in the
 * contiguous layout a batch of such sequences still does, for all but one of them: each frees
 * its own group); kvc_engine_trim gives it back. Cost: O(tokens) per layer (a selection:
 * O(tokens log tokens) at worst; a decode step's few evictions, one pass) plus the moved
 * tokens' bytes, plus the pool's trim when memory was released: O(1) unless more than that one
 * group is free and committed, else a scan of O(pool groups / 64) words and one hole punch per
 * tensor per run released; offloading adds a copy of each evicted token's bytes and one slot write
 * per slot's worth of evicted tokens (one every block_tokens decode steps that evict a
 * token per layer, or per head; at worst, with more sequences compacting than open
 * records, one per compaction that evicts).
 */
kvc_status kvc_seq_compact(kvc_engine *e, uint64_t seq, size_t budget_tokens);

/**
 * Writes the original positions `layer` of `seq` holds, slot by slot, into
 * positions[0 .. min(capacity, *n)-1]; *n = layer length (per-head mode: num_kv_heads *
 * layer length, head-major). Never observed nor compacted: 0 .. length-1 (per head: once
 * per head). capacity < *n: the prefix
 * is written and KVC_ERR_BUFFER_TOO_SMALL returned. positions may be NULL when capacity 0.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n, NULL positions with capacity > 0, layer),
 * KVC_ERR_NOT_FOUND, KVC_ERR_BUFFER_TOO_SMALL.
 */
kvc_status kvc_seq_positions(kvc_engine *e, uint64_t seq, uint32_t layer, int32_t *positions,
                             size_t capacity, size_t *n);

/** Stores the number of tokens (slots) `layer` of `seq` holds in *n_tokens.
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL e/n_tokens, layer), KVC_ERR_NOT_FOUND. */
kvc_status kvc_seq_layer_length(kvc_engine *e, uint64_t seq, uint32_t layer, size_t *n_tokens);

/**
 * Episodic: registers conversation segment [start, end) of `seq` (original positions
 * already appended) with its embedding of `dim` floats (embedding_dim, or the sequence's
 * first segment's dimension). Returns KVC_ERR_INVALID_ARGUMENT (NULL e/embedding, empty or
 * out-of-range segment, wrong dimension, non-finite value, a squared norm past FLT_MAX / 8
 * (4.25e37: distances between embeddings must stay finite floats), more than 4096 segments),
 * KVC_ERR_NOT_FOUND, KVC_ERR_UNSUPPORTED (the sequence's policy is not episodic: no focus
 * could use the segment; set the policy first, kvc_seq_set_eviction starts afresh),
 * KVC_ERR_OUT_OF_MEMORY (the sequence's eviction state cannot be allocated, see TOKEN
 * EVICTION; nothing changed).
 */
kvc_status kvc_seq_add_segment(kvc_engine *e, uint64_t seq, size_t start, size_t end,
                               const float *embedding, uint32_t dim);

/**
 * Episodic: clusters the segments into episodes (k-means, episode_seed) if they changed,
 * credits the attention observed since the previous focus to the episode of the segment
 * added last (register each finished turn as a segment before focusing the next query),
 * then stores the episode nearest to query_embedding in *episode and focuses it:
 * kvc_seq_compact keeps its heavy hitters (and the current turn's).
 * Episodic offload (with a disk tier): each layer (per head: each KV head of each layer)
 * then re-chooses which tokens are resident among all its tokens, in memory and on disk,
 * by the focused episode's scores, keeping its length. Resident tokens that lose their
 * place are written to disk; the offloaded tokens that win it are read back into those
 * slots (per head: into that head's slice of them) asynchronously.
 * kvc_seq_positions reports the new positions at once, but the sequence is not ready:
 * do not read its K/V (or run attention over it) until kvc_seq_ready says 1. A failed or
 * corrupt read is never served: its restores are undone (the displaced tokens stay) and
 * kvc_seq_ready reports the lost tokens once (KVC_ERR_IO). Waits first for every disk read
 * still filling the sequence (a prefix hit, a swap-in, previous restores): the tokens a
 * restore displaces are written to disk from memory; then, offloading, for a free staging
 * buffer (see COMPLETIONS); both without the engine's lock.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/query_embedding/episode, no segment yet, wrong
 * dimension, non-finite value or squared norm past FLT_MAX / 8, as kvc_seq_add_segment; with a
 * disk tier, seq swapped out), KVC_ERR_NOT_FOUND,
 * KVC_ERR_IO (with a disk tier, a failed disk read spoiled seq, see kvc_seq_ready),
 * KVC_ERR_UNSUPPORTED (not episodic), KVC_ERR_OUT_OF_MEMORY (the restore must copy a
 * shared block or page and the budget has no room, or the sequence's eviction state cannot
 * be allocated, see TOKEN EVICTION: the previous focus stands, no token is
 * restored, *episode is not written; retry after freeing memory; while asynchronous
 * swap-outs or freed sequences' reads are pending it first waits for them, as allocations do). Cost: k-means when the segments changed; with offloaded tokens O(tokens) per
 * layer (per head: per head) plus one slot write per record of displaced tokens and one slot read per record
 * restored from. Allocates (outside memory_bytes, see TOKEN EVICTION) only the first time,
 * to re-cluster, or to grow the table of offloaded tokens.
 */
kvc_status kvc_seq_focus(kvc_engine *e, uint64_t seq, const float *query_embedding, uint32_t dim,
                         uint32_t *episode);

/**
 * Overrides the eviction policy (KVC_EVICTION_*) and granularity (per_head 0 or 1) of
 * `seq`, keeping the engine's other eviction parameters. Allowed until its first
 * compaction (observations so far are dropped; a sensitivity set by
 * kvc_seq_set_layer_sensitivity and segments added by kvc_seq_add_segment are kept); setting the policy and granularity the
 * sequence already has changes nothing and returns KVC_OK, also after a compaction.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, unknown policy, per_head > 1, a different
 * policy or granularity once compacted), KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY (the new
 * eviction state cannot be allocated, see TOKEN EVICTION, or episodic offload's open-record
 * buffers cannot be mapped, the message naming them; the old state stays). With a disk
 * tier, the first call that makes a sequence KVC_EVICTION_EPISODIC on an engine of another
 * eviction_policy maps those buffers (see kvc_seq_compact); later calls map nothing.
 */
kvc_status kvc_seq_set_eviction(kvc_engine *e, uint64_t seq, uint32_t policy, uint32_t per_head);

/**
 * Adaptive budgets: sets `seq`'s per-layer sensitivity (n_layers = num_layers values >= 0,
 * not all 0); layer budgets are then proportional to it.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/sensitivity, wrong count, bad value),
 * KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY (the sequence's eviction state cannot be
 * allocated, see TOKEN EVICTION; nothing changed).
 */
kvc_status kvc_seq_set_layer_sensitivity(kvc_engine *e, uint64_t seq, const float *sensitivity,
                                         uint32_t n_layers);

/* ---------------------------------------------------------------------------------------
 * Disk tier (offload_dir, offload_bytes)
 *
 * DISK TIER
 *   Memory is the scarce tier, an SSD the large one. With offload_dir and offload_bytes set:
 *   - Spill: when memory is needed (or on kvc_engine_trim) the coldest cached prefix blocks
 *     are written to disk instead of being dropped. A slot holds one block of every layer's K
 *     and V plus a header (block hash, parent hash, length, generation, checksum). A block is
 *     written once however many sequences share it.
 *   - Reload: kvc_seq_create's prefix lookup looks at each block in memory first, then in
 *     the disk tier, and stops at the first block found nowhere; a block in memory is shared
 *     wherever it lies in the chain (also one another sequence's disk read is still filling:
 *     the sequences sharing it are not ready until it landed), and only the blocks memory
 *     lacks get memory and are read back asynchronously; all count in *cached_tokens. The
 *     server must not read K/V below *cached_tokens until kvc_seq_ready says 1. Such reads
 *     (own tier and peers, and kvc_seq_swap_in's) never wait for the device: a read that
 *     finds every staging buffer in flight (a prefix of more blocks than buffers, or a busy
 *     device) is queued, its slot held, and submitted by later calls that process
 *     completions (see COMPLETIONS) as buffers free up, oldest request first, adjacent slots
 *     still merged; the sequence is not ready until they are submitted and landed.
 *     kvc_seq_free of a sequence with queued reads takes them back (nothing lands in its
 *     freed memory; those blocks stay on disk, and leave the memory index, never filled).
 *   - Nothing read back is served unverified: a torn or corrupt slot (wrong header,
 *     generation or checksum) is a miss (kvc_seq_ready fails with KVC_ERR_IO, see there).
 *   - Restart: a journal (kvcache.journal, one record appended after each write completed)
 *     lets an engine created on the same offload_dir (same shape) find its blocks again.
 *     A slot is rewritten only after a FREED record for its old block is written, so a
 *     process crash loses nothing journaled and leaves no journaled slot half-rewritten;
 *     kvc_engine_sync makes it durable across power loss too (fdatasync). A power loss may
 *     keep a slot's rewrite yet lose the FREED record before it (appended after the last
 *     sync, or never written back): the restart then finds a block whose slot holds another.
 *     Never wrong bytes (every read is verified), but such a block fails its first read:
 *     kvc_seq_ready returns KVC_ERR_IO for the sequence reading it (free it and create it
 *     again: it recomputes), and the block leaves the tier (BLOCK_REMOVED), so it is written
 *     again when next spilled. Until a read verifies it, a recovered block is never shared by
 *     a kvc_seq_swap_out: the swap-out writes its own copy, which replaces the recovered one.
 *     No I/O for this: one bit per slot. While that record
 *     cannot be appended (a full disk) the slot stays free but is not written, and the tier
 *     drops no cached block to make room: on a full disk the tier stops taking new blocks
 *     into slots it freed until the journal can record that (such a spill is not written,
 *     the block dropped as without a tier and counted in disk_errors; a swap-out needing
 *     such slots fails with KVC_ERR_IO, changing nothing); a later call that appends the
 *     records makes those slots usable again. Reopening costs per slot of offload_bytes,
 *     not per journal record (the replay reads 16 KiB at a time): measured ~1.2 s per million
 *     slots on a loaded 2-core machine (~0.45 s of it CPU) and a peak of ~200 bytes of memory
 *     per slot, ~125 of them kept (docs/disk-tier.md, "Restart at millions of slots"; at the
 *     4,194,304-slot maximum ~5 s, ~800 MB). The journal is
 *     compacted when an engine opens it (when there is no room for the compacted copy, the
 *     old journal is kept and the engine opens on it, with a line on stderr), and while it
 *     runs, once it passes 64 KiB plus 3 records (192 bytes) per slot of the slab (rewritten
 *     from what the tier holds: a record per stored slot; two fsyncs, under the engine's
 *     lock, at most once per 64 KiB plus 2 records per slot appended), and that
 *     forgets for good: blocks in slots past a
 *     smaller offload_bytes than before (a cache shrinks: the slab file is cut to
 *     offload_bytes), and each record that fails its checksum (a torn tail a crash leaves, a
 *     flipped bit; the replay goes on past it; the slot keeps its previous record, verified
 *     before it is ever served). Both are counted in kvc_stats.disk_journal_dropped, with a
 *     line on stderr. An engine holds its offload_dir exclusively (flock on kvcache.slab
 *     until kvc_engine_destroy or the process's death; a child forked without exec closes
 *     its copy of the lock's descriptor at the fork, so it does not hold the directory
 *     after the engine's destroy, nor after the parent's death), so a second engine on the
 *     same directory cannot overwrite the first one's slots: its create fails with
 *     KVC_ERR_IO ("... is in use by another engine ...") and the first keeps serving. It
 *     tries the lock for up to a second before that: a process another thread is starting
 *     (posix_spawn, vfork, fork then exec) holds its parent's descriptors, this lock's
 *     included, until its exec, so an engine destroyed a moment ago may still hold it. A
 *     process killed with writes still queued (a slow device) releases that lock at once,
 *     before its writes end: kvc_engine_create then waits for them (up to 60 s, a line on
 *     stderr when over a second; after that KVC_ERR_IO, "... has not after 60 s"), so none
 *     lands on a slot the new engine wrote. It does not wait where the file system maps
 *     flock onto byte-range locks (as NFS does) or has no open-file-description locks:
 *     there such late writes can still overwrite slots, which reads then refuse (verified,
 *     never served). The slab grows (fallocate, as slots are first needed) only while the
 *     file system keeps free a reserve for the journal: 64 KiB plus 256 bytes (4 records)
 *     per slot of the slab (a file system that reports no size, as ramfs, is bounded by
 *     offload_bytes alone). A journal append that fails anyway (another writer took the
 *     space) loses no record: it counts in disk_errors, the records are appended by a later
 *     call, and kvc_engine_sync returns KVC_ERR_IO until they are. Where the file system has
 *     no fallocate (ext3's files without extents, NFS before 4.2, many FUSE file systems)
 *     the slab grows sparse (ftruncate), its space taken as slots are written: a write a
 *     full disk refuses then fails as any write does (a spill counted in disk_errors, a
 *     swap-out KVC_ERR_IO), and the journal's reserve above is not kept (the free space the
 *     growth checks is not yet taken by the slab). The tier names its files by offload_dir's
 *     absolute path (resolved at create), so a later chdir does not lose them.
 *   - Permissions: the slab holds tenants' K/V, the journal their block hashes (a salted
 *     hash lets its reader test guessed prompts offline), kvcache.identity the fingerprint
 *     key (BLOCK HASH). The engine creates each with mode 0600 (and narrows to 0600 a slab or
 *     journal an older build made group or world readable), opens none through a symbolic
 *     link (O_NOFOLLOW), and kvc_engine_create fails with KVC_ERR_IO, the message naming the
 *     file and what is wrong, writing through nothing, when in offload_dir kvcache.slab,
 *     kvcache.journal or kvcache.identity is a symbolic link, not a regular file, owned by
 *     another user than the process's effective one or (slab, journal) has a second hard
 *     link (another user may have planted it: a link to a file the engine would overwrite,
 *     an identity whose key it chose), or when kvcache.identity grants group or others any
 *     permission (its key is no secret). A journal compaction's kvcache.journal.new is
 *     created exclusively after removing whatever has that name. offload_dir writable by
 *     every user must have the sticky bit (as /tmp) and belong to the process's effective
 *     user or root, else KVC_ERR_IO before anything is created: anyone (with the sticky bit,
 *     its owner) could replace or remove the files under the engine. A FIFO or other special
 *     file under a tier file's name is refused at once, never waited on. Give each engine
 *     a directory of its own, 0700 (a group-writable one trusts the group as the engine's
 *     user: its members may remove or rename the files). A peer is read by engines of the
 *     same user (or root), since its identity is 0600: its kvcache.identity may be another
 *     user's but is refused (KVC_ERR_IO) when group or others may write it, and none of its
 *     files is read through a symbolic link or when not a regular file.
 *   - I/O: io_uring (liburing) with registered staging buffers and file, at least 32
 *     requests in flight, O_DIRECT slab; requests for adjacent slots are merged (up to 1 MiB),
 *     so a swap is a few large transfers. Fallbacks, each logged once on stderr with the reason: O_DIRECT
 *     refused (EINVAL) -> buffered I/O; io_uring unavailable -> a pread/pwrite thread pool
 *     of 4 threads per engine (forced by the environment variable
 *     KVCACHE_OFFLOAD_BACKEND=threads); the staging buffers' registration refused -> io_uring
 *     with the kernel pinning them per request (a little more CPU per request): usually
 *     RLIMIT_MEMLOCK, which registered buffers count against unless the process has
 *     CAP_IPC_LOCK, per user, so shared by all the user's engines and rings; an unprivileged
 *     user's default of 8 MiB holds fewer than the default 32 staging buffers of a
 *     large-block model; fallocate unsupported (EOPNOTSUPP) -> a sparse slab (see above).
 *     kvc_stats.disk_io_mode says which I/O path an engine runs.
 *     KVCACHE_OFFLOAD_FAULT=OPS:N (OPS read, write or all; OPS:N@DIR: only the engine whose
 *     offload_dir is the directory DIR, however spelled: compared by device and inode) makes
 *     those disk requests fail with EIO after the first N of them (to rehearse failures).
 *     kvc_engine_create refuses a value of either variable it does not recognise, and a DIR
 *     that is not an existing directory (KVC_ERR_INVALID_ARGUMENT naming it; the backend's:
 *     threads or uring).
 *   - Peers (peer_offload_dirs): the disk tier can sit on a shared file system so that
 *     engines reuse each other's spilled blocks. kvc_seq_create walks the prompt's chain of
 *     blocks: at each block memory first, then the own disk tier, then each peer in the order
 *     listed; it stops at the first block found nowhere. A peer hit is read
 *     (io_uring, O_DIRECT as the own tier, through the same queue and staging buffers) into a
 *     fresh block of this engine, verified against the peer's journal record (header, block
 *     hash, generation, checksum), then indexed as an ordinary cached block of this engine
 *     (KVC_EVENT_BLOCK_STORED, KVC_TIER_MEMORY, as for a hit of the own disk tier; it may later be
 *     spilled to this engine's own tier). It counts in *cached_tokens and prefix_hit_tokens
 *     (not disk_hit_tokens) at kvc_seq_create, and in peer_hits only once its read verified.
 *     A peer may free and rewrite the slot at any time: a read that does not verify is a miss
 *     counted in peer_stale, never served and never in peer_hits (it stays counted in
 *     prefix_hit_tokens, which is what kvc_seq_create answered).
 *     Freshness: each peer's journal is indexed at kvc_engine_create and tailed by any
 *     kvc_seq_create whose lookup reaches the peers: one fstat of the journal and one stat
 *     of its path, and only when it grew, the complete records appended since (a partial
 *     record is read later); a journal the peer rewrote (its compaction) or that shrank is
 *     replayed from its start; a directory moved aside and made anew (or a switched
 *     symlink) is opened anew at its path. A peer whose files vanish later gives misses, not errors; when its directory
 *     holds a tier of this engine's model_tag and shape again (recreated, e.g. by a restart
 *     that starts empty), the next kvc_seq_create reaching the peers opens the new slab and
 *     reads it, once no read of the old one is in flight. Until then a kvc_seq_create
 *     reaching the peers tries again (reads its kvcache.identity) only when the directory or
 *     that file changed since the last try (two stat calls otherwise), and once more a
 *     second after a failed try, as file times are coarse (a change in the same tick as that
 *     try's stat shows in no later one); no file time is compared with this machine's
 *     clock, so a shared file system whose clock runs ahead costs no more. Cost
 *     without peers: nothing (one check per kvc_seq_create that misses in its own tier);
 *     with them about 56 bytes of index per slot of each peer's slab, grown (doubling) as
 *     the peer's slab grows, so every block of a peer is found, however large its tier (at
 *     most 4194304 slots, as for any tier). A peer must hold blocks
 *     of this engine's model_tag and shape (its kvcache.identity), else create fails; the
 *     tag must not be 0 (no model named) when there are peers.
 *   - Events (kvc_event.tier KVC_TIER_DISK, see kvc_drain_events): a block is
 *     KVC_EVENT_BLOCK_STORED there as soon as a prefix lookup can find it in this tier —
 *     when its write is submitted (a spill, or a kvc_seq_swap_out of a block in the prefix
 *     index, written under its block hash; a block the tier holds already is neither written
 *     nor announced again) — with its parent hash as in memory; KVC_EVENT_BLOCK_REMOVED when
 *     it no longer can: dropped for room (least recently used), its write failed, or a read
 *     found it torn or corrupt. Slots without a block hash (a swapped-out sequence's blocks
 *     outside the prefix index, such as its partial last block; episodic-offload records)
 *     are never announced. Restart: after the memory tier's KVC_EVENT_ALL_CLEARED (see
 *     kvc_engine_create), kvc_engine_create emits one KVC_EVENT_ALL_CLEARED (KVC_TIER_DISK),
 *     then a KVC_EVENT_BLOCK_STORED for every block it found in the journal (each after its
 *     parent when the tier holds both), so a router applying the events in order holds
 *     exactly what this engine finds in both tiers (nothing in memory), whether or not it
 *     noticed the restart. The event queue grows at create to hold those beside its 65536
 *     (24 bytes per block found), so none is dropped before the first kvc_drain_events; a
 *     drain that leaves at most 65536 pending frees that room (a free, no allocation).
 *     One enqueue per block, no allocation after create; completions
 *     are announced under the engine's lock, where they are processed.
 *   - Memory outside memory_bytes: staging buffers of one slot each,
 *     min(the tier's slots, max(offload_queue_depth slots, min(1024 slots, 32 MiB)));
 *     episodic offload's open records, at most min(max_seqs, offload_queue_depth) slot
 *     payloads, only once a sequence can be episodic (see kvc_seq_compact); the queue of
 *     reads waiting for a staging buffer (see Reload), 64 bytes per block the memory budget
 *     holds, allocated at create, and 4 more for swap-outs' kept blocks (see
 *     kvc_seq_swap_out); the eviction spill's ancestor walk (kept between
 *     evictions, so a freed chain's walk is O(chain) in all), 44 bytes per such block; the
 *     list of freed sequences whose reads are in flight (see kvc_seq_free), 8 bytes per
 *     max_seqs slot (made without a tier too), so completions look at those alone; in the
 *     contiguous layout the sequences whose create shares a block still being read, until it
 *     lands; and, with or without a tier, each evicting sequence's eviction state (see TOKEN
 *     EVICTION).
 *
 * COMPLETIONS: there is no engine thread. Completed disk requests are processed (verified,
 *   copied into memory, journaled) inside kvc_seq_ready, kvc_engine_poll, kvc_seq_create,
 *   kvc_seq_swap_out, kvc_seq_swap_out_async, kvc_seq_swap_in and kvc_seq_free (never in
 *   kvc_seq_append, kvc_seq_fork or kvc_seq_compact, unless they find no room while
 *   swap-outs or freed sequences' reads are pending, see below; an allocation's spill that
 *   finds no staging buffer free takes only completed writes, never reads; in
 *   kvc_engine_trim only while it waits for staging buffers or for freed sequences' reads).
 *   The same calls submit the remaining blocks of pending swap-outs as staging buffers free
 *   up, release the memory of kvc_seq_swap_out_async calls
 *   whose writes all completed and of freed sequences whose reads all landed (kvc_seq_free),
 *   and drop the tokens of episodic-offload records whose write failed, in every sequence
 *   holding one at once, once none of them has restores in flight (as does kvc_seq_focus of
 *   a sequence holding one, before it chooses: such tokens are not read back; a restore that
 *   reads one meanwhile, while a fork's restores are in flight, is undone and restores
 *   nothing, and the tokens are lost with the record). A server
 *   waiting for a sequence calls kvc_seq_ready, or kvc_engine_poll to block briefly.
 *   kvc_engine_poll, kvc_seq_swap_out (for its writes), kvc_engine_trim (for staging buffers
 *   and freed sequences' reads), kvc_seq_swap_out and kvc_seq_swap_out_async before they start
 *   (for the sequence's reads, queued ones too, and then for a staging buffer for its first
 *   block when every one is in flight, behind the queued reads) and an allocation (create,
 *   append, fork, swap-in) that finds no room (memory, or a sequence slot) while
 *   kvc_seq_swap_out_async calls are pending or freed sequences' reads are in flight
 *   (kvc_seq_free) wait for the device without holding the engine's lock: other threads' calls
 *   (on other sequences) proceed while they wait. The same calls first submit queued reads
 *   (see Reload) into the buffers completions freed, before pending swap-outs' blocks and
 *   spills. Never waiting for the device: kvc_seq_ready, kvc_seq_create (its prefix reads
 *   queue), kvc_seq_swap_in (its reads queue), kvc_seq_free (reads in flight into its memory
 *   keep that memory until they land; its queued reads are taken back, except those of a block
 *   another sequence shares, which stay with that memory), kvc_seq_swap_out_async's later
 *   blocks, an allocation's spills, kvc_seq_append otherwise. kvc_seq_compact and
 *   kvc_seq_focus first wait, without the lock, until the sequence's reads landed and, when it
 *   offloads evicted tokens (episodic offload), a staging buffer is free (behind the queued
 *   reads), so that their first record write takes one at once. Still waiting with the
 *   engine's lock held: only when every staging buffer is in flight (and then behind the
 *   queued reads), episodic offload's further record writes and record reads (a
 *   kvc_seq_compact or kvc_seq_focus that needs more buffers than were free, a kvc_seq_fork
 *   that writes an open record); until the sequence's own reads landed (its queued ones go out
 *   behind older queued reads): kvc_seq_fork (contiguous) and an append that copies a shared
 *   block, neither of which a server calls before kvc_seq_ready says 1; a swap-out whose start
 *   the tier refuses (a block finds the tier or disk full) waits for every request in flight
 *   before it returns the error; kvc_engine_sync waits for everything (its fdatasyncs run
 *   without the lock).
 *   Known exceptions to "never waiting" (all under the lock, so other threads wait too): a
 *   slot taken when none is free grows the slab file by an extent (fallocate, which on ext4
 *   and xfs waits for every direct I/O in flight on the file: a create whose spill grew it
 *   took 8 s behind an 8 s stall, another thread's kvc_engine_stats 7.5 s); and a journal
 *   compaction (when a flush finds the journal past 64 KiB plus 3 records per slot) writes a
 *   new copy, fsyncs it, renames it and fsyncs offload_dir inside the call that flushed (any
 *   call that processes completions, an allocation whose spill reuses freed slots, a
 *   swap-out, a sync). No wait has a time limit: each lasts as long as the device stalls
 *   (kvc_seq_swap_out, kvc_engine_sync, a swap-out waiting for a staging buffer, an append
 *   or swap-in waiting for pending swap-outs, the two above, kvc_engine_destroy).
 *   Writeback (kvc_config.offload_writeback): a thread of the engine copies the coldest cached
 *   blocks into staging buffers with the lock released and writes them, so an allocation's
 *   evictions copy only the blocks it has not reached (when calls evict faster than it
 *   writes); an eviction passes over a block being copied, and a call that must
 *   evict, drop or rewrite one (every cached block is being copied; kvc_engine_trim, a
 *   compaction) waits, holding the lock, for that block's copy: at most 8 blocks' copies.
 *
 * FAULTS: a full disk (ENOSPC, or a file-size limit), an I/O error, an unusable directory
 *   each give a status and a kvc_last_error message; the engine keeps serving. A failed spill
 *   drops the block as without a tier (counted in disk_errors). An allocation that evicts
 *   cached blocks spills them only into staging buffers free beyond the eighth kept for
 *   other traffic and never waits for one: when none is free the block is dropped as without
 *   a tier (counted in spills_skipped, not an error), as vLLM's offloading connector and
 *   LMCache skip a store when their store path is full, so an allocation never stalls every
 *   thread's calls behind the device (but for a slab growth or a journal compaction, see
 *   COMPLETIONS) nor takes the buffers prefix reads and swap-ins need.
 *   A failed swap-out leaves the sequence resident and unchanged (kvc_seq_swap_out_async:
 *   reported by the sequence's next kvc_seq_ready, kvc_seq_swap_in or swap-out, see there).
 *   When the tier is full, its least recently used block is dropped (KVC_EVENT_BLOCK_REMOVED,
 *   KVC_TIER_DISK); blocks of swapped-out sequences never are (a spill that finds every slot held
 *   is skipped, spills_skipped; a swap-out that needs a slot then fails with KVC_ERR_IO).
 * --------------------------------------------------------------------------------------- */

/**
 * Stores 1 in *ready when every token of `seq` is resident (no disk read is still filling
 * it), else 0 (also for a swapped-out sequence). Processes completed disk requests first;
 * never waits. Without a disk tier every sequence is ready.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e/ready), KVC_ERR_NOT_FOUND; KVC_ERR_IO once when
 * a kvc_seq_swap_out_async of `seq` failed after it returned (the sequence is resident and
 * unchanged, its K/V never left memory; the next call says 1); or KVC_ERR_IO when a
 * disk read for the sequence failed or was torn or corrupt: its bytes were not served and
 * the bad blocks left both tiers, with the blocks the create indexed past its cached_tokens
 * (their K/V will never be computed; KVC_EVENT_BLOCK_REMOVED for each). The blocks it hit
 * after the bad one stay indexed: their K/V came from memory other sequences computed, or
 * from disk reads that succeeded. The bad blocks' K/V is not there: free the sequence and create
 * it again from every token it holds, the prompt and any it decoded, as a recompute preemption
 * does (it then reports fewer cached tokens; the server computes the rest). Until it is freed,
 * every call that reaches or changes its K/V (kvc_seq_append, _fork, _truncate, _schedule,
 * _kv, _block_table, _compact, _focus, _swap_out, _swap_out_async) fails with KVC_ERR_IO,
 * naming the failure, and changes nothing; kvc_seq_ready keeps returning it; kvc_seq_free,
 * kvc_seq_abort, kvc_seq_length and the eviction queries work as before. The engine learns of
 * the failure when it processes the read's completion (see COMPLETIONS): a call before that
 * succeeds. Episodic offload: also 0 while tokens a
 * kvc_seq_focus restores are still being read; once they landed, KVC_ERR_IO is returned once
 * when offloaded tokens were lost since the last call (a slot that could not be written, or
 * whose read failed or was corrupt): they were dropped, never served, and the sequence stays
 * usable (re-read kvc_seq_positions; the next call reports ready). Cost: O(blocks of seq) plus
 * the completions processed.
 */
kvc_status kvc_seq_ready(kvc_engine *e, uint64_t seq, int *ready);

/**
 * Processes completed disk requests (submitting pending swap-outs' remaining blocks and
 * releasing the memory of kvc_seq_swap_out_async calls whose writes all completed), waiting up to timeout_us for the first one when
 * requests are in flight and none has completed yet (returns at once when none are in
 * flight). The wait does not hold the engine's lock: other threads' calls proceed meanwhile
 * and may process the completions themselves (the wait then ends as well).
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e). No-op without a tier.
 */
kvc_status kvc_engine_poll(kvc_engine *e, uint32_t timeout_us);

/**
 * Preempts `seq`: writes its K/V to the disk tier and releases its memory. Synchronous: on
 * KVC_OK every block it holds alone is on disk and its memory is free (cached prefix blocks
 * already on disk are not written again). Blocks a resident sequence also holds (a shared
 * prompt prefix, a fork's blocks) are neither written nor freed: `seq` keeps its references
 * to them, and kvc_seq_swap_in takes them back as they are. So a swap-out writes, frees and
 * needs back (tier slots, then memory at the swap-in) only the blocks `seq` holds alone.
 * Kept blocks stay in memory until kvc_seq_swap_in or kvc_seq_free of `seq`, also after
 * their resident holders are freed (their memory then stays used); a swap-out of the last
 * resident holder writes them and frees them, so swapping out every sharer frees all, but
 * for sharers whose swap-outs are pending at once (kvc_seq_swap_out_async, or a
 * kvc_seq_swap_out while another's writes run): each started while the other was resident,
 * so both keep the shared blocks and neither writes them; they stay in memory until a
 * kvc_seq_swap_in or the last kvc_seq_free of them (nothing is lost). A kept block that
 * leaves the prefix index meanwhile (a sharer's kvc_seq_abort below it, a failed read), also
 * while the swap-out is still pending, stays kept as it is. Contiguous layout: only shared
 * blocks in the prefix index are kept (the index holds their pages); other shared blocks, a
 * fork's unindexed ones, are written as before. The sequence stays live
 * (kvc_seq_length, kvc_seq_free work) but kvc_seq_kv, kvc_seq_block_table, kvc_seq_append
 * and kvc_seq_fork return KVC_ERR_INVALID_ARGUMENT until kvc_seq_swap_in.
 * Swap out only a sequence whose K/V is written for every token it holds (between steps):
 * the blocks go to disk as they are, those in the prefix index under their block hashes,
 * where later prompts find them, after a restart too, and a block the tier holds already is
 * not written again when the server computes it later. A request preempted after the call
 * that gave it tokens (kvc_seq_create, _schedule, _append) and before the forward pass that
 * writes them would leave uncomputed bytes under those hashes for good: end it instead with
 * kvc_seq_abort(seq, the tokens it has computed), which takes the uncomputed blocks out of
 * the prefix index, and create it again from its prompt and decoded tokens when it resumes
 * (a recompute preemption, as vLLM's; its computed blocks stay cached and are hit).
 * While the writes are in flight the engine's lock is released (whenever the call processed
 * completions, calls blocked on the lock run before it goes on): other threads' calls
 * proceed, and for them `seq` is swapped out from the start (kvc_seq_ready says 0, its K/V
 * cannot be reached); a kvc_seq_free or kvc_seq_swap_in of it waits until the swap-out ends.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, already swapped out, also while a
 * kvc_seq_swap_out_async of it is pending), KVC_ERR_NOT_FOUND, KVC_ERR_UNSUPPORTED (no disk
 * tier), KVC_ERR_IO (disk full, tier full of swapped-out blocks, write error; or an earlier
 * kvc_seq_swap_out_async of it failed and was not reported yet: the sequence stays resident
 * and unchanged; or a failed disk read spoiled it, see kvc_seq_ready), KVC_ERR_OUT_OF_MEMORY
 * (a swap-out's buffers could not be allocated, see Allocation; nothing changed). A tier too
 * full for the blocks to write (its free slots, the slots its file can still grow by and its
 * cached blocks counted) is found so before any cached block is dropped for them; one that
 * holds them once the spill writes in flight have landed waits for those writes instead.
 * While journal appends fail (a full disk) neither cached blocks nor freed slots count: a
 * slot is rewritten only once the journal recorded its old block freed (see the disk tier).
 * A block the tier holds is shared only once this engine wrote it or a read verified it:
 * one recovered at a restart and never read is written again (after a power loss its slot
 * may hold another block, see DISK TIER, Restart), so KVC_OK means the blocks are on disk.
 * Cost: a memcpy and checksum per block, and the writes at full queue depth (paged: one
 * request per block of every layer; contiguous: likewise, from the sequence's ranges). The
 * copies run without the engine's lock (about 0.25 ms per 128 KiB block on a small VM:
 * 45-60 ms for 27 MiB): up to seven eighths of the staging area when the call starts, the
 * rest in batches as completions free buffers; the call takes the blocks' staging buffers
 * and disk slots first, so no other call reuses them, and a kvc_seq_free or kvc_seq_swap_in
 * of `seq` waits until the copy is submitted. Held under the lock: only a first block copied
 * when nothing but the reserved eighth of the buffers is free.
 * Allocation: none while no other swap-out (either call) is pending. Each pending swap-out
 * holds one set of buffers (the positions of the blocks it writes, their disk slots, hashes
 * and copies: 72 bytes per block of a max_seq_tokens sequence); kvc_engine_create allocates
 * one set, and a swap-out that finds every set held by pending ones allocates another (more
 * pending at once than ever before), kept for later swap-outs until kvc_engine_destroy.
 * With index_on_schedule, a swap-out that completes with prompt blocks not scheduled yet
 * also allocates 24 bytes per such block, freed at its kvc_seq_swap_in or kvc_seq_free.
 */
kvc_status kvc_seq_swap_out(kvc_engine *e, uint64_t seq);

/**
 * Preempts `seq` like kvc_seq_swap_out, but returns once its first writes are submitted: as
 * many of its blocks as staging buffers are free beyond an eighth of them (at least one)
 * are copied and checksummed into them (the call's cost), and from then on `seq` is
 * swapped out for every caller (kvc_seq_ready says 0; kvc_seq_kv, kvc_seq_block_table,
 * kvc_seq_append, kvc_seq_fork return KVC_ERR_INVALID_ARGUMENT). Its memory stays committed
 * (and counted) until a later call that processes completions (see COMPLETIONS) finds every
 * write on disk; only then is it released, exactly as kvc_seq_swap_out releases it. The
 * blocks of a sequence larger than the staging area (see DISK TIER, memory outside it)
 * that did not fit are copied and submitted by those later calls as completions free
 * staging buffers (kvc_engine_poll with a timeout drives it to the end; kvc_engine_sync
 * waits for all of it); their bytes stay untouched in memory meanwhile. Pending swap-outs
 * and kvc_engine_trim's spills together always leave an eighth of the staging buffers free,
 * so that a prefix read from disk, a swap-in or an episodic record write issued meanwhile
 * does not wait for their writes (a spill to make room for an allocation takes only the
 * other buffers, and is skipped when none is free: see FAULTS and spills_skipped). An
 * allocation (kvc_seq_create, kvc_seq_append, kvc_seq_fork, kvc_seq_swap_in,
 * kvc_seq_compact, kvc_seq_focus, kvc_seq_truncate) that finds no room while such swap-outs
 * are pending waits, without the engine's lock, until one ended and tries again:
 * KVC_ERR_OUT_OF_MEMORY comes only once none is pending.
 * Before its writes completed, kvc_seq_swap_in of `seq` cancels the swap-out (the sequence
 * is resident and ready at once, nothing is read) and kvc_seq_free of it releases its memory
 * at once and its disk slots when the writes complete.
 * A write that fails after the call returned, or a later block the tier refuses (disk full,
 * tier full of swapped-out blocks), loses nothing: `seq` becomes resident again,
 * unchanged, and its next kvc_seq_ready, kvc_seq_swap_in, kvc_seq_swap_out or
 * kvc_seq_swap_out_async returns KVC_ERR_IO once, with a kvc_last_error message naming the
 * failure; afterwards it is an ordinary resident sequence.
 * Returns what kvc_seq_swap_out returns for failures found before the call returns (the
 * sequence stays resident and unchanged). Cost: a memcpy and checksum per block it submits,
 * at most seven eighths of the staging buffers' worth, without the engine's lock (about
 * 0.25 ms per 128 KiB block on a small VM: 45-60 ms for 27 MiB; a kvc_seq_free or
 * kvc_seq_swap_in of `seq` meanwhile waits for the copy); it waits for the device only
 * for the sequence's pending reads and when no buffer at all is free, both without the
 * engine's lock, before it starts; the other blocks' copies fall to the later calls that
 * submit them, under the lock (as many per call as completions freed buffers).
 * Allocation: as kvc_seq_swap_out's (the swap-out's buffer set is held until it ends).
 */
kvc_status kvc_seq_swap_out_async(kvc_engine *e, uint64_t seq);

/**
 * Brings swapped-out `seq` back: takes back the blocks its swap-out kept (shared with
 * resident sequences when it started, see kvc_seq_swap_out; contiguous: their pages mapped
 * as a prefix hit's), commits memory for the others and starts reading them (paged:
 * blocks still cached in memory, held by no sequence, are shared instead of read; with
 * index_on_schedule also indexed blocks live sequences hold, which are scheduled; without
 * it those may not be computed yet, and the sequence reads its own). Returns at once; wait for
 * kvc_seq_ready before reading or writing its K/V: the reads fill whole blocks, every layer's
 * slots up to the longest layer's length, so after a compaction with adaptive budgets a
 * shorter layer's appended token written before then may be overwritten. Calls that copy
 * its blocks or pages before then (an append, a fork, a compaction) wait for the reads
 * first. In the paged layout re-read the block table.
 * A pending kvc_seq_swap_out_async of `seq` is cancelled instead (its memory was never
 * released: resident and ready at once, nothing read); a kvc_seq_swap_out of it in progress
 * on another thread is waited for.
 * Returns KVC_ERR_INVALID_ARGUMENT (NULL e, not swapped out), KVC_ERR_NOT_FOUND,
 * KVC_ERR_UNSUPPORTED (no disk tier), KVC_ERR_IO once when its kvc_seq_swap_out_async failed
 * after returning (it is resident and unchanged), KVC_ERR_OUT_OF_MEMORY (nothing changed; it
 * stays out; while kvc_seq_swap_out_async calls or freed sequences' reads are pending it
 * first waits for them).
 */
kvc_status kvc_seq_swap_in(kvc_engine *e, uint64_t seq);

/** Waits for every disk request (every block of pending swap-outs included, whose
 *  outcome it settles as kvc_engine_poll does), appends the journal records still owed and
 *  fdatasyncs the slab and journal (and fsyncs offload_dir when a journal compaction's fsync
 *  of it failed: until one succeeds a power loss could bring back the old journal), so that
 *  what was spilled survives a power loss: everything written or completed before the call
 *  (blocks other threads store while it syncs are not promised). It holds the engine's lock
 *  while it waits for the device; the fdatasyncs and that fsync (6-12 ms on a small VM's
 *  disk) run without it, on the files it pinned under it, so other threads' calls (another
 *  sync too) run meanwhile (a process with no descriptor left to pin them gets them run
 *  under the lock, as before, not an error); it also waits without the lock for a swap-out
 *  copying its blocks on another thread. Without a disk tier: KVC_OK at once (nothing to
 *  sync). Returns KVC_ERR_INVALID_ARGUMENT (NULL e), KVC_ERR_IO: an fdatasync or that fsync
 *  failed (tried again by the next call), or journal records could not be appended (a full
 *  disk; the message says how many and why): the blocks they describe are served in this run but a
 *  restart would not find them. Those records are kept and every later call that processes
 *  completions (see COMPLETIONS) tries again, so a sync once space is free returns KVC_OK.
 *  KVC_ERR_IO too when kvcache.slab or kvcache.journal is no longer the file at its path in
 *  offload_dir (the directory removed or moved, or a file replaced, under the engine; the
 *  message names the file): the tier goes on storing into the files it holds open, served
 *  in this run, but a restart would find none of it, and every later sync fails the same
 *  way until the engine is destroyed and created again. A power loss after blocks were
 *  written since the last sync may leave blocks a restart finds whose slots hold others
 *  (never read as theirs: their first read fails, see DISK TIER, Restart); syncing more
 *  often leaves fewer. */
kvc_status kvc_engine_sync(kvc_engine *e);

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

/** kvc_hash_tokens under `salt` (BLOCK HASH, Salt): the hashes kvc_seq_create_salted indexes
 *  and its KV events carry; salt 0 gives kvc_hash_tokens' hashes. Same results and cost. */
kvc_status kvc_hash_tokens_salted(const int32_t *tokens, size_t n_tokens, uint32_t block_tokens,
                                  uint64_t salt, uint64_t *hashes, size_t capacity, size_t *n_hashes);

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
 *                               uncached tokens) x prefill_ms_per_token. This router never
 *                               moves a routed request: DualMap's hotspot rebalancing needs
 *                               the instances' queues, which only the Swift router (and the
 *                               replay's simulator) is given (docs/routing.md).
 *   KVC_ROUTER_ROUND_ROBIN      cycle over instances.
 *   KVC_ROUTER_LEAST_LOADED     fewest pending prefill tokens.
 *   KVC_ROUTER_CONSISTENT_HASH  one ring over the key; ignores load.
 *   KVC_ROUTER_PREFIX_TREE      SGLang router's cache-aware policy (match ratio > 0.5 wins,
 *                               else, or when imbalanced by > 32 and x1.1, the least
 *                               in-flight requests).
 *   KVC_ROUTER_OVERLAP_COST     Dynamo KV router: min of prefill blocks + active blocks, the
 *                               distinct blocks of the requests routed to the instance and
 *                               not finished (kvc_router_finish) plus this prompt's others.
 *   KVC_ROUTER_LLM_D            llm-d's precise prefix-cache profile: max of 3 x prefix score
 *                               (cached prefix, min-max normalised over the instances caching
 *                               block 0) + 2 x (1 - KV usage) + 2 x queue score (waiting
 *                               requests, min-max normalised); ties: fewer active requests.
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
    KVC_ROUTER_OVERLAP_COST = 5,
    KVC_ROUTER_LLM_D = 6
};

/** kvc_router_config.view values: how the router learns what instances cache. */
enum {
    /** The policy's own: approximate for PREFIX_TREE (as SGLang), exact for the others. */
    KVC_ROUTER_VIEW_DEFAULT = 0,
    /** From KV events passed to kvc_router_observe_events. */
    KVC_ROUTER_VIEW_EXACT = 1,
    /** From the router's own decisions (events are ignored): each block routed to an instance
     *  is assumed cached there; per instance the 16384 most recently routed distinct blocks
     *  are kept (a block routed again is refreshed; within one request the first block counts
     *  as the most recent, so a prompt's last blocks are forgotten before its first). */
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
    /** The request key hashes the first key_blocks blocks, 1..64. Default 2. Choose it past
     *  the longest prefix many conversations share (a system prompt) and within the shortest
     *  first prompt of a conversation: a key inside a shared system prompt sends every
     *  conversation using it to the same two candidates; a key longer than a conversation's
     *  first prompt gives its later turns another key (docs/routing.md, "The key"). */
    uint32_t key_blocks;
    /** Ring positions per instance of weight 1, 1..4096. Default 128. All instances' positions
     *  are bounded (kvc_router_add_instance). */
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

/** An instance's load, as it reports it. struct_size rules as kvc_config (read only; its
 *  padding, offset 4, is not read). */
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
    /** Of active_requests, those queued and not started (KVC_ROUTER_LLM_D's queue score).
     *  Offset 40 (the struct is 48 bytes since this field); an older 40- or 32-byte struct
     *  reports 0 for every instance, which that score reads as a tie. */
    uint64_t waiting_requests;
    /* more may follow */
} kvc_instance_load;

/** The smallest kvc_instance_load.struct_size accepted: through free_blocks. */
#define KVC_INSTANCE_LOAD_MIN_SIZE (offsetof(kvc_instance_load, free_blocks) + sizeof(uint64_t))

/** Writes the defaults listed in kvc_router_config to the first `size` bytes at *cfg and
 *  sets cfg->struct_size = size: bytes past the fields this library knows are zeroed (0 is
 *  every later field's "as before"), nothing past `size` is written. Pass
 *  sizeof(kvc_router_config) as you compiled it; the kvc_router_config_init macro below does.
 *  NULL, or `size` below KVC_ROUTER_CONFIG_MIN_SIZE or above KVC_STRUCT_SIZE_MAX: nothing
 *  written. Thread-safe. */
void kvc_router_config_init_size(kvc_router_config *cfg, size_t size);

/** The first version's initialiser: writes exactly 40 bytes (the struct of this header) and
 *  sets struct_size = 40. Code compiled against this header reaches
 *  kvc_router_config_init_size through the macro below instead; binaries built before the
 *  macro existed call this symbol, and a library whose kvc_router_config grows keeps it
 *  writing 40 bytes, never past their struct (its new fields default to 0 = the behaviour
 *  before them). NULL: no-op. Thread-safe. */
void kvc_router_config_init(kvc_router_config *cfg);
#define kvc_router_config_init(cfg) kvc_router_config_init_size((cfg), sizeof(kvc_router_config))

/** Creates a router with no instances. Returns KVC_ERR_INVALID_ARGUMENT (NULL cfg/out, bad
 *  struct_size or field; the message names it), KVC_ERR_UNSUPPORTED (unknown non-zero
 *  field). *out is NULL on failure. */
kvc_status kvc_router_create(const kvc_router_config *cfg, kvc_router **out);

/** Releases the router. NULL: no-op. Must not race with other calls on `r`. */
void kvc_router_destroy(kvc_router *r);

/** Adds instance `instance` with `weight` (share of ring positions, (0, 64]; 1 standard).
 *  Its load starts at 0 and its cache empty. Each of the two hash rings holds at most 524288
 *  positions: the live instances' virtual_nodes x weight (rounded, at least 1) summed, which
 *  any membership at the default 128 virtual nodes fits (64 instances of weight 64).
 *  Returns KVC_ERR_EXISTS (already added), KVC_ERR_INVALID_ARGUMENT (NULL r, weight, 64
 *  instances already, or its positions would pass 524288: the message gives the numbers);
 *  nothing changes then. Cost, under the router's lock: sorts the instance's v positions
 *  and merges them into each ring, O(v log v + P) for P positions (at 524288: about 3 ms,
 *  docs/routing.md). */
kvc_status kvc_router_add_instance(kvc_router *r, uint32_t instance, double weight);

/** Removes `instance`: no later decision picks it; what it cached is forgotten. Keys it
 *  owned move to ring neighbours, other keys stay. Returns KVC_ERR_NOT_FOUND. Cost, under
 *  the router's lock: O(P) to take its positions off the rings, and one probe per block
 *  hash the cache view credited to the instance (nothing for an instance that cached none),
 *  read from its set of blocks, which shrinks as blocks leave: reading it examines at most
 *  24 entries per block held, or 12,288 (it was the set's peak size: 22-27 ms for 16
 *  blocks after a 4,000,000-block peak). A halving of the shared block table that these
 *  removals call for is left to later calls (see kvc_router_route), so the view's memory
 *  falls over the routes and events after a scale-down, not inside it (each removal drove
 *  the halving: 64 -> 4 instances of 60,000 blocks took 10.1 ms a removal, max 47.7 ms,
 *  against 5.3 and 14 before the table shrank at all; docs/routing.md): within 65,536 of
 *  them at any size (two drains; the second goes straight to the size the blocks left call
 *  for), a few dozen when no block is left (it was one halving at a time: ~700,000 routes
 *  from 2^23 entries to 2^20). */
kvc_status kvc_router_remove_instance(kvc_router *r, uint32_t instance);

/**
 * Picks the instance for a prompt of n_tokens tokens whose chained block hashes are
 * block_hashes[0 .. n_blocks-1] (full blocks; a trailing partial block's hash may be
 * included), stores its id in *instance, and advances that instance's load by the request
 * until the next kvc_router_report (each count saturating at UINT64_MAX). Returns
 * KVC_ERR_INVALID_ARGUMENT (NULL r/instance, NULL block_hashes, n_blocks 0, n_tokens 0,
 * n_blocks above the ceil(n_tokens / block_tokens) blocks the prompt fills),
 * KVC_ERR_NOT_FOUND (no instance); nothing changes then.
 * With KVC_ROUTER_OVERLAP_COST the request's hashes count among the instance's active
 * blocks until kvc_router_finish.
 * Cost: about one hash-table probe per cached block plus two ring lookups (overlap cost:
 * also about two probes per block, to count and to record it); no allocation, except when
 * overlap cost's active-block tables grow (an instance's flat table doubles at half full,
 * moving its entries in that route: at most 131,072, 8 MiB), and with the approximate
 * view: the first route
 * to an instance allocates its history
 * once (the 16384 blocks it may hold, in order of last route, in a 32768-entry map: 512 KiB),
 * and a route whose new blocks take the shared block table past half full doubles it.
 * A doubling, or a halving when removals leave the table under an eighth full, is
 * incremental: it maps the new array as zero pages and every later insert, removal or
 * route moves at most 4 entries from the old one and passes at most 32 empty ones (a
 * halving of S > 2^19 entries: S / 2^17 and S / 2^14, 64 and 512 at 2^23, so it drains
 * within 32,768 calls; an old array left empty is unmapped without being read),
 * unmapping the old one 2 MiB at a time as they are passed, at most 4 MiB per call (it was
 * freed whole: 0.1-0.19 s at 256-512 MiB); lookups probe both until it has drained,
 * which routes alone also finish; so no call pays for the whole
 * table; the batches after a doubling pay the new arrays' page faults (measured, one
 * instance up to 8,000,000 blocks: worst batch of 4,096 stored events 24-36 ms, where
 * the whole-table rehash and log compaction took 45-420 ms; docs/routing.md).
 */
kvc_status kvc_router_route(kvc_router *r, const uint64_t *block_hashes, size_t n_blocks,
                            size_t n_tokens, uint32_t *instance);

/** Replaces `instance`'s load with *load (any values, UINT64_MAX included; estimates and
 *  comparisons saturate rather than wrap). Returns KVC_ERR_INVALID_ARGUMENT (NULL r/load,
 *  struct_size out of range), KVC_ERR_UNSUPPORTED (unknown non-zero field),
 *  KVC_ERR_NOT_FOUND (unknown or removed instance). */
kvc_status kvc_router_report(kvc_router *r, uint32_t instance, const kvc_instance_load *load);

/** Tells the router that a request it routed to `instance` has finished (completed,
 *  cancelled, aborted or rejected), by the block_hashes[0 .. n_blocks-1] it was routed with
 *  (the same array given to kvc_router_route). KVC_ROUTER_OVERLAP_COST counts, per instance,
 *  the distinct blocks of the requests routed there and not finished, queued ones included,
 *  as Dynamo's router does (its free at request completion); the end of a request's prefill
 *  is not its finish. Call it once per routed request, with any policy: the others keep
 *  nothing and only check the arguments (non-NULL, n_blocks > 0, a known instance), so for
 *  them any hashes are accepted. Hashes are counted, not tied to a request, so a
 *  second finish of a request whose blocks a later request shares takes that request's.
 *  Memory: an instance counts at most 262,144 distinct blocks (64-192 bytes each); a route
 *  that would pass it first forgets the instance's count, so a server that never calls this
 *  keeps the router's memory bounded, and the forgotten requests' finishes are refused (as
 *  are those of a request of more than 262,144 blocks, which is never counted).
 *  Returns KVC_ERR_INVALID_ARGUMENT (NULL r, NULL block_hashes, n_blocks 0; with
 *  KVC_ROUTER_OVERLAP_COST only, a hash no unfinished request routed to the instance holds:
 *  never routed there, already finished or forgotten), KVC_ERR_NOT_FOUND (unknown or removed
 *  instance); nothing changes then.
 *  Cost: two probes of the instance's flat count table per block, and one of the shared
 *  block table per block whose last reference goes; no allocation. Measured with
 *  kvc_router_route (2026-11-25, 64 instances, 40-block prompts, exact view, loaded
 *  machine): 4.6-5.3 us a route + finish, against 10.9-12.3 us with per-instance Swift
 *  Dictionaries in the same run (DualMap's route alone: 0.44-0.78 us); docs/routing.md. */
kvc_status kvc_router_finish(kvc_router *r, uint32_t instance, const uint64_t *block_hashes,
                             size_t n_blocks);

/** Applies `instance`'s KV events, in the order kvc_drain_events returned them, to the exact
 *  cache view (ignored by an approximate view). The view stays exact across a restart of the
 *  instance's engine that the router is not told of (no remove and add): a new engine's first
 *  event clears its memory tier (kvc_engine_create). Every event's kind is checked before any is
 *  applied. Only KVC_TIER_MEMORY events change the view: other tiers, unknown ones included,
 *  are accepted and ignored (a disk hit still costs a read), as is a stored or removed block
 *  hash 0 (it names no block). `events` may be NULL only when n_events is 0. The view
 *  tracks up to 2^26 (67,108,864) distinct blocks over all instances, its memory following
 *  them (32-128 bytes each: the table doubles past half full and halves under an eighth
 *  full; up to 96 while an outgrown table drains after a doubling, 192 after a halving:
 *  3 GiB at the bound; and
 *  as much again per instance holding the block, in that instance's set of blocks, which
 *  shrinks likewise); a batch whose stored blocks could pass that (each stored
 *  memory-tier block no instance holds counted as new, repeats and removals in the batch
 *  not netted) is refused whole, so the view never drops a block in silence. A batch whose
 *  first event is a memory-tier ALL_CLEARED (a restarted engine's first batch) is judged as
 *  if that clear had been applied: the blocks only this instance holds count as free.
 *  These events carry no number: the view is exact only if every batch arrives exactly
 *  once and in order, across restarts too. A crashed engine's batch delivered after its
 *  successor's ALL_CLEARED is applied, its blocks credited for good (routes go on to an
 *  instance holding none); a redelivered batch credits removed blocks again, a redelivered
 *  first batch clears every block. Through an event bus use kvc_router_observe_events_seq.
 *  Returns
 *  KVC_ERR_INVALID_ARGUMENT (NULL r, NULL events with n_events > 0, n_events above
 *  PTRDIFF_MAX / sizeof(kvc_event), an unknown kind),
 *  KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY (the bound above); nothing changes then.
 *  Cost: three hash-table probes per removed event, four per stored one (the shared table
 *  and the instance's set), one per block the instance held for an all-cleared one (its
 *  set is read, at most 24 entries per block or 12,288, then released (kept, emptied, at
 *  its first 4,096 entries), the shared table's halving left to later calls; a second pass when
 *  it leads a batch whose stores the room check would otherwise refuse, to count the blocks
 *  it frees); a stored event may
 *  double either and a removed one halve either, incrementally (see kvc_router_route), so
 *  no call pays a pass over all blocks but an all-cleared one. The
 *  second set costs time: measured mean per stored event 180-240 ns before, 440-590 after
 *  (one instance, 1-8 million blocks; docs/routing.md). */
kvc_status kvc_router_observe_events(kvc_router *r, uint32_t instance, const kvc_event *events,
                                     size_t n_events);

/** Applies `instance`'s batch events[0 .. n_events-1], numbered first_seq .. first_seq +
 *  n_events - 1 of the engine stream `epoch` (kvc_drain_events_seq), so that a bus that
 *  delivers at least once, late, or across restarts leaves the view exact. Per instance the
 *  router keeps the epoch and next expected number of the stream it applied;
 *  kvc_router_add_instance and _remove_instance reset them. Epochs order engines by
 *  creation (kvc_drain_events_seq), so:
 *    same epoch: events below the expected number are duplicates, skipped (a batch
 *      straddling it applies only its new tail); a batch starting past it is a gap, refused.
 *    a smaller epoch: stale (an engine older than the instance's current one: a dead
 *      engine's late or replayed batch, however many restarts ago), ignored, KVC_OK.
 *    a greater epoch, batch starting at 1: a new engine; applied (its event 1, ALL_CLEARED,
 *      empties the view) and its epoch taken. Starting above 1: a gap, refused.
 *  So a new instance's first batch must start at event 1, or follow a resync. A gap is
 *  refused with KVC_ERR_NOT_FOUND, nothing changed, the message naming the missing events
 *  ("events 5...9 of epoch 0x... of instance 3 are missing (this batch starts at 10, ...)");
 *  the remedy is kvc_router_resync_instance with the engine's kvc_engine_index_events_seq.
 *  (KVC_ERR_NOT_FOUND also means an unknown instance, which the caller can tell: it added
 *  it.) An empty batch changes nothing. Do not mix with kvc_router_observe_events on one
 *  instance (those change the view, not the position). Events, room and the rest are as
 *  kvc_router_observe_events (the room judged on the events applied).
 *  Returns KVC_ERR_INVALID_ARGUMENT (as kvc_router_observe_events; epoch 0, first_seq 0,
 *  numbers past UINT64_MAX), KVC_ERR_NOT_FOUND, KVC_ERR_OUT_OF_MEMORY; nothing changes then.
 *  Cost: kvc_router_observe_events' for the events applied, O(1) per batch for the rest. */
kvc_status kvc_router_observe_events_seq(kvc_router *r, uint32_t instance, uint64_t epoch,
                                         uint64_t first_seq, const kvc_event *events,
                                         size_t n_events);

/** Replaces `instance`'s view with an engine's dump, kvc_engine_index_events_seq's events
 *  (starting with its memory tier's ALL_CLEARED) and position (epoch, next_seq), and sets
 *  the instance's stream there: later batches of `epoch` holding events below next_seq are
 *  duplicates (the dump holds them), the one holding next_seq applies its tail. The remedy
 *  for a refused gap, for a router restarted, or for an instance added while its engine
 *  runs. A dump of a smaller epoch than the instance's is stale: ignored, KVC_OK. Returns
 *  KVC_ERR_INVALID_ARGUMENT (as kvc_router_observe_events; epoch 0, next_seq 0, a dump not
 *  starting with a memory-tier ALL_CLEARED), KVC_ERR_NOT_FOUND (unknown instance),
 *  KVC_ERR_OUT_OF_MEMORY (the view's bound, judged after the dump's clear); nothing changes
 *  then. Cost: kvc_router_observe_events' for the dump's events. */
kvc_status kvc_router_resync_instance(kvc_router *r, uint32_t instance, uint64_t epoch,
                                      uint64_t next_seq, const kvc_event *dump_events,
                                      size_t n_events);

/** Calibrates the TTFT estimate: a prefill of n_tokens uncached tokens (any instance) took
 *  `milliseconds`. The router keeps an exponentially decayed ratio of milliseconds to tokens
 *  (starting from prefill_ms_per_token), so long prompts weigh by their size.
 *
 *  What to pass: the time the prefill added, not the time of the steps that carried it. A
 *  continuous-batching step that computes prefill chunks beside decoding sequences pays for
 *  both: the weight read (the floor of every step), one token per decoding sequence and their
 *  K/V reads. Report, per step (or summed over a request's steps), the step's prefill tokens
 *  and the step's time less what the same step would take without its prefill chunks: its
 *  decode work alone, which the server measures as its decode-only step time at that batch
 *  (its inter-token latency) or takes from its profiled cost model; a step with no decoding
 *  sequence counts whole. A step whose prefill added no measurable time is not reported.
 *  The whole time of a mixed step overstates the cost per token, most for a small chunk
 *  beside many decodes (a 200-token chunk beside one decode on the reference A100 /
 *  Qwen2.5-7B: 12 ms of prefill in a 21 ms step), and every estimate scales with it.
 *  Returns
 *  KVC_ERR_INVALID_ARGUMENT (NULL r, n_tokens 0, milliseconds not a positive number, or an
 *  observation after which the estimate would be infinite or 0: the decayed sum of
 *  milliseconds overflowing, or its ratio to tokens underflowing); nothing changes then. */
kvc_status kvc_router_observe_prefill(kvc_router *r, size_t n_tokens, double milliseconds);

/**
 * A router's counters and its cache view's fill (kvc_router_get_stats): what a control plane
 * needs to see what its event bus does to the view. duplicate_events growing: the bus
 * redelivers (harmless, skipped); stale_events: a dead engine's batches arrive late (ignored);
 * refused_gaps: batches were lost, each refused until the instance is resynced;
 * refused_full_batches or refused_inserts: the view is full and misses blocks.
 *
 * The counters count from kvc_router_create and are never reset (kvc_router_remove_instance
 * keeps them); live_instances and tracked_blocks are the state at the call. Invariants:
 * slo_switches <= decisions; tracked_blocks <= tracked_blocks_limit; live_instances <= 64;
 * rebalance_moves is 0 (this ABI never moves a routed request, see KVC_ROUTER_DUALMAP).
 *
 * Forward compatibility: set struct_size = sizeof(kvc_router_stats) before the call.
 * - struct_size < KVC_ROUTER_STATS_MIN_SIZE (including 0) or above KVC_STRUCT_SIZE_MAX:
 *   KVC_ERR_INVALID_ARGUMENT, nothing written.
 * - A smaller struct than a later header's (an older caller): only the fields that fit
 *   entirely are written.
 * - A larger struct (a newer caller): every known field is written and the bytes past them
 *   up to struct_size are set to 0; nothing past struct_size is written.
 * struct_size itself is never written; the padding after it (offset 4) is written 0.
 */
typedef struct kvc_router_stats {
    /** Bytes of this struct as the caller compiled it: sizeof(kvc_router_stats). Input only. */
    uint32_t struct_size;
    /** Requests routed: kvc_router_route calls that succeeded. */
    uint64_t decisions;
    /** KVC_ROUTER_DUALMAP: decisions that left the candidate caching the longer prefix
     *  because its estimated TTFT exceeded ttft_slo_ms / 2. */
    uint64_t slo_switches;
    /** Queued requests moved by rebalancing: 0 (the Swift router's count; see
     *  KVC_ROUTER_DUALMAP). */
    uint64_t rebalance_moves;
    /** Events of kvc_router_observe_events_seq batches skipped as already applied:
     *  redelivered, or below a resync's next_seq. */
    uint64_t duplicate_events;
    /** Events of numbered batches and dumps (kvc_router_observe_events_seq,
     *  kvc_router_resync_instance) ignored as an older engine's than their instance's. */
    uint64_t stale_events;
    /** Numbered batches refused with KVC_ERR_NOT_FOUND because events before them are
     *  missing (a redelivered refused batch counts again); the remedy is a resync. */
    uint64_t refused_gaps;
    /** Batches (kvc_router_observe_events, _seq, kvc_router_resync_instance) refused whole
     *  with KVC_ERR_OUT_OF_MEMORY: their stored blocks could take the exact view past
     *  tracked_blocks_limit. */
    uint64_t refused_full_batches;
    /** Blocks the view refused because it held tracked_blocks_limit. With an approximate view,
     *  one per route that met the full view (it credits none of its blocks from that one on);
     *  an exact view refuses the batch instead (refused_full_batches), so 0 there. */
    uint64_t refused_inserts;
    /** Instances added and not removed. */
    uint64_t live_instances;
    /** Distinct block hashes the view holds now, over all instances. */
    uint64_t tracked_blocks;
    /** The most the view holds: 2^26 (67,108,864). */
    uint64_t tracked_blocks_limit;
    /* more may follow */
} kvc_router_stats;

/** The smallest kvc_router_stats.struct_size accepted: every field of its first version. */
#define KVC_ROUTER_STATS_MIN_SIZE \
    (offsetof(kvc_router_stats, tracked_blocks_limit) + sizeof(uint64_t))

/** Writes the router's counters to *out, honouring out->struct_size (see kvc_router_stats):
 *  one snapshot, under the router's mutex (it waits for a call in progress). Reads only:
 *  nothing in the router changes. Returns KVC_ERR_INVALID_ARGUMENT (NULL r/out, struct_size
 *  out of range). Cost: O(1). Version node KVC_1.2. */
kvc_status kvc_router_get_stats(kvc_router *r, kvc_router_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* KVCACHE_H */
