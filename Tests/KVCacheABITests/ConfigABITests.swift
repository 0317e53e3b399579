#if canImport(Glibc)
import Glibc
#endif
import Testing
import KVCache
@testable import KVCacheABI

/// In an exit test's child process: creates (and destroys) an engine from `config` and exits 0
/// once kvc_engine_create returns, whatever its status; an abort fails the exit test.
/// The child's data segment (heap and private writable mappings; not the shared memfd or the
/// PROT_NONE reservations) is capped at 2 GiB, so a runaway allocation fails fast instead of
/// taking the machine's memory.
func exitAfterCreate(_ config: CConfig) -> Never {
    capDataSegment()
    var engine: OpaquePointer?
    _ = config.create(&engine)
    kvc_engine_destroy(engine)
    exit(0)
}

/// In an exit test's child process, with the data segment capped as `exitAfterCreate` does:
/// exits 0 when kvc_engine_create returns `status` and a message containing `word` (or
/// KVC_OK), else prints what it got and exits 1; an abort fails the exit test.
func exitWhenCreateReturns(_ config: CConfig, _ status: kvc_status, mentioning word: String = "") -> Never {
    capDataSegment()
    var engine: OpaquePointer?
    let rc = config.create(&engine)
    let message = String(cString: kvc_last_error())
    kvc_engine_destroy(engine)
    guard rc == status && (rc == KVC_OK || message.contains(word)) else {
        print("kvc_engine_create: \(String(cString: kvc_status_name(rc))) \(message)")
        exit(1)
    }
    exit(0)
}

/// Caps this (an exit test's child) process's data segment at 2 GiB.
private func capDataSegment() {
    var limit = rlimit(rlim_cur: 2 << 30, rlim_max: 2 << 30)
    _ = withUnsafePointer(to: &limit) { setrlimit(__rlimit_resource_t(RLIMIT_DATA.rawValue), $0) }
}

/// Tries to create an engine from `config`; destroys it again when it was created.
private func createStatus(_ config: CConfig) -> kvc_status {
    var engine: OpaquePointer?
    LastError.clear()
    let rc = config.create(&engine)
    kvc_engine_destroy(engine)
    return rc
}

@Suite struct ConfigABITests {
    @Test func configInitWritesTheDocumentedDefaultsAtTheHeadersOffsets() {
        var bytes = [UInt8](repeating: 0xAB, count: 176)
        bytes.withUnsafeMutableBytes { kvc_config_init_size($0.baseAddress, 168) }
        var c = CConfig()
        c.bytes = bytes
        #expect(c.structSize == 168)
        #expect(c.numLayers == 32)
        #expect(c.numKVHeads == 8)
        #expect(c.headDim == 128)
        #expect(c.dtypeBytes == 2)
        #expect(c.blockTokens == 16)
        #expect(c.layout == KVC_LAYOUT_PAGED)
        #expect(c.maxSeqs == 256)
        #expect(c.maxSeqTokens == 32768)
        #expect(c.memoryBytes == 8 << 30)
        #expect(c.pageBytes == 64 << 10)
        #expect(c.numaNode == -1)
        #expect(c.metadataOnly == 0)
        #expect(bytes[36..<40].allSatisfy { $0 == 0 }, "padding is zeroed")
        #expect(bytes[64..<80].allSatisfy { $0 == 0 }, "offload_dir NULL and offload_bytes 0: no disk tier")
        #expect(bytes[80..<84] == [0, 0, 0, 0], "eviction_policy defaults to KVC_EVICTION_NONE")
        #expect(bytes[88] == 4, "sink_tokens defaults to 4")
        #expect(bytes[104] == 4, "episodes defaults to 4")
        #expect(bytes[124..<128].allSatisfy { $0 == 0 }, "index_on_schedule defaults to 0")
        #expect(c.offloadQueueDepth == 32, "offload_queue_depth defaults to 32")
        #expect(bytes[132..<136].allSatisfy { $0 == 0 }, "padding is zeroed")
        #expect(bytes[136..<144].allSatisfy { $0 == 0 }, "peer_offload_dirs defaults to NULL: no peers")
        #expect(bytes[144..<152].allSatisfy { $0 == 0 }, "model_tag defaults to 0")
        #expect(bytes[152..<160].allSatisfy { $0 == 0 }, "prefill_tokens_per_s defaults to 0.0")
        #expect(bytes[160..<164].allSatisfy { $0 == 0 }, "offload_writeback defaults to 0")
        #expect(bytes[164..<168].allSatisfy { $0 == 0 }, "event_capacity defaults to 0 (65536)")
        #expect(bytes[168...].allSatisfy { $0 == 0xAB }, "kvc_config_init wrote past sizeof(kvc_config)")
    }

    @Test func configInitOfNullIsANoOp() {
        kvc_config_init(nil)
        kvc_config_init_size(nil, 168)
    }

    /// Binaries built against the first header call the symbol `kvc_config_init` with a
    /// 128-byte struct: it writes those 128 bytes (the same defaults) and nothing past them.
    @Test func theFirstVersionsInitialiserWritesExactly128Bytes() throws {
        var old = [UInt8](repeating: 0xAB, count: 176)
        old.withUnsafeMutableBytes { kvc_config_init($0.baseAddress) }
        var current = [UInt8](repeating: 0xAB, count: 176)
        current.withUnsafeMutableBytes { kvc_config_init_size($0.baseAddress, 168) }
        #expect(old[0..<4] == [128, 0, 0, 0], "struct_size 128")
        #expect(old[4..<128] == current[4..<128], "the same defaults")
        #expect(old[128...].allSatisfy { $0 == 0xAB }, "nothing written past the first version's struct")
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.bytes.replaceSubrange(0..<4, with: old[0..<4])
        c.offloadQueueDepth = 7  // past the 128 bytes: not read
        let config = try c.decoded()
        #expect(config.offloadQueueDepth == 32)
    }

    /// A caller's struct of any size gets exactly that many bytes: a larger (newer) one has
    /// the fields this library does not know zeroed, which create accepts; a struct cut inside
    /// a field (130 bytes) or a size outside `KVC_CONFIG_MIN_SIZE...KVC_STRUCT_SIZE_MAX` too.
    @Test func theSizedInitialiserWritesExactlyTheCallersSize() {
        for size in [60, 130, 152, 160, 168, 200] {
            var bytes = [UInt8](repeating: 0xAB, count: size + 8)
            bytes.withUnsafeMutableBytes { kvc_config_init_size($0.baseAddress, size) }
            #expect(bytes[0..<4] == [UInt8(size), 0, 0, 0], "struct_size \(size)")
            #expect(bytes[size...].allSatisfy { $0 == 0xAB }, "nothing past \(size) bytes")
            #expect(bytes[min(size, 168)..<size].allSatisfy { $0 == 0 }, "bytes past the known fields zeroed")
            var c = CConfig(structSize: max(size, 168))
            c.bytes.replaceSubrange(0..<size, with: bytes[0..<size])
            let small = CConfig.small(KVC_LAYOUT_PAGED)
            c.bytes.replaceSubrange(4..<60, with: small.bytes[4..<60])
            #expect(createStatus(c) == KVC_OK, "a \(size)-byte struct from the initialiser creates an engine")
        }
        for size in [0, 59, 4097] {
            var bytes = [UInt8](repeating: 0xAB, count: 64)
            bytes.withUnsafeMutableBytes { kvc_config_init_size($0.baseAddress, size) }
            #expect(bytes.allSatisfy { $0 == 0xAB }, "size \(size): nothing written")
        }
    }

    @Test func createWithNullConfigIsInvalid() {
        var engine: OpaquePointer? = OpaquePointer(bitPattern: 0x1234)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["cfg", "NULL"]) { kvc_engine_create(nil, &engine) }
        #expect(engine == nil, "*out is set to NULL on failure")
    }

    @Test func createWithNullOutIsInvalid() {
        let c = CConfig.small(KVC_LAYOUT_PAGED)
        expectFailure(KVC_ERR_INVALID_ARGUMENT, mentioning: ["out", "NULL"]) {
            c.bytes.withUnsafeBytes { kvc_engine_create($0.baseAddress, nil) }
        }
    }

    @Test(arguments: [0, 4, 59])
    func structSizeBelowTheMinimumIsInvalid(size: UInt32) {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.structSize = size
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["struct_size", "\(size)"])
    }

    @Test func structSizeAboveTheMaximumIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.structSize = 1 << 20
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["struct_size", "\(1 << 20)"])
    }

    @Test func anOlderSmallerConfigGetsDefaultsForTheMissingFields() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.metadataOnly = 1  // lies past struct_size 60: must be ignored (metadata-only has no K/V pointers)
        c.structSize = 60
        let f = try ABIFixture(c)
        try f.create(1, tokens: [1, 2, 3, 4, 5])
        var k: UnsafeMutableRawPointer?
        var v: UnsafeMutableRawPointer?
        #expect(kvc_block_kv(f.handle, try f.blockTable(1)[0], 0, &k, &v) == KVC_OK, "metadata_only must default to 0")
    }

    @Test func aNewerLargerConfigWithZeroedExtraFieldsIsAccepted() throws {
        var c = CConfig(structSize: CConfig.size + 16)
        let small = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
        c.bytes.replaceSubrange(4..<64, with: small.bytes[4..<64])
        let f = try ABIFixture(c)
        try f.create(1, tokens: [1, 2, 3])
        #expect(try f.stats().budgetBytes == small.memoryBytes)
    }

    /// A caller built against the 128-byte struct (before offload_queue_depth) gets the
    /// default: the library reads nothing past its struct_size, whatever lies there.
    @Test func aPreviousVersionsConfigGetsTheDefaultQueueDepth() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.structSize = 128
        c.offloadQueueDepth = 7  // past the caller's struct: not read
        let old = try c.decoded()
        #expect(old.offloadQueueDepth == 32)
        _ = try ABIFixture(c)

        c.structSize = 136
        c.offloadQueueDepth = 256
        let new = try c.decoded()
        #expect(new.offloadQueueDepth == 256, "the field is read at offset 128")
    }

    @Test func modelTagIsReadAtOffset144AndAnOlderStructGetsTag0() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.modelTag = 0xA1
        c.structSize = 144
        let old = try c.decoded()
        #expect(old.modelTag == 0, "a 144-byte struct ends before model_tag")
        c.structSize = 152
        let new = try c.decoded()
        #expect(new.modelTag == 0xA1, "the field is read at offset 144")
    }

    @Test func prefillTokensPerSecondIsReadAtOffset152AndAnOlderStructGets0() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.prefillTokensPerSecond = 12_500.5
        c.structSize = 152
        let old = try c.decoded()
        #expect(old.prefillTokensPerSecond == 0, "a 152-byte struct ends before prefill_tokens_per_s")
        c.structSize = 160
        let new = try c.decoded()
        #expect(new.prefillTokensPerSecond == 12_500.5, "the field is read at offset 152")
    }

    /// A speed that is negative, NaN or infinite is refused by name and creates nothing.
    @Test(arguments: [-1.0, .nan, .infinity])
    func aBadPrefillSpeedIsInvalid(speed: Double) {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.prefillTokensPerSecond = speed
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["prefill_tokens_per_s"])
    }

    @Test func aNewerLargerConfigSettingAnUnknownFieldIsUnsupported() {
        var c = CConfig(structSize: CConfig.size + 16)
        let small = CConfig.small(KVC_LAYOUT_PAGED)
        c.bytes.replaceSubrange(4..<64, with: small.bytes[4..<64])
        c.bytes[168] = 1
        #expect(createStatus(c) == KVC_ERR_UNSUPPORTED)
        expectStatus(KVC_ERR_UNSUPPORTED, KVC_ERR_UNSUPPORTED, mentioning: ["168"])
    }

    /// A later header may put a field in padding without changing the struct's size (as
    /// index_on_schedule did at 124): a non-zero padding byte within struct_size is refused
    /// by offset, in a struct of this size or an older one; padding past struct_size is not read.
    @Test(arguments: [36, 39, 132, 135])
    func aNonZeroPaddingByteIsUnsupported(offset: Int) {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.bytes[offset] = 0x5a
        #expect(createStatus(c) == KVC_ERR_UNSUPPORTED)
        expectStatus(KVC_ERR_UNSUPPORTED, KVC_ERR_UNSUPPORTED, mentioning: ["kvc_config byte \(offset) is not 0"])
        guard offset >= 60 else { return }  // within every struct_size accepted
        c.structSize = UInt32(offset + 1)
        #expect(createStatus(c) == KVC_ERR_UNSUPPORTED, "within an older struct_size too")
        c.structSize = UInt32(offset - offset % 4)
        #expect(createStatus(c) == KVC_OK, "padding past struct_size is not read")
    }

    /// An offload_dir in a struct whose struct_size ends before offload_bytes is refused, as
    /// one without offload_bytes is in a whole struct: never dropped in silence.
    @Test func anOffloadDirWithoutRoomForOffloadBytesIsInvalid() throws {
        let dir = scratchDir()
        defer { rmdir(dir) }
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.structSize = 72
        var engine: OpaquePointer?
        let rc = c.create(&engine, offloadDir: dir)
        kvc_engine_destroy(engine)
        #expect(rc == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(rc, KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_dir", "struct_size 72", "offload_bytes"])
    }

    @Test func offloadWritebackIsReadAtOffset160AndAnOlderStructGets0() throws {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadWriteback = 1
        c.structSize = 160
        let old = try c.decoded()
        #expect(!old.offloadWriteback, "a 160-byte struct ends before offload_writeback")
        c.structSize = 168
        let new = try c.decoded()
        #expect(new.offloadWriteback, "the field is read at offset 160")
    }

    /// Neither 0 nor 1, or set without a disk tier: refused by name, nothing created.
    @Test func aBadOffloadWritebackIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.offloadWriteback = 2
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_writeback", "neither 0 nor 1"])
        c.offloadWriteback = 1
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["offload_writeback", "disk tier"])
    }

    /// A field set to a value outside its range, and a word the message must contain.
    struct BadField: CustomTestStringConvertible, Sendable {
        let name: String
        let set: @Sendable (inout CConfig) -> Void
        var testDescription: String { name }
    }

    @Test(arguments: [
        BadField(name: "num_layers") { $0.numLayers = 0 },
        BadField(name: "num_layers") { $0.numLayers = .max },
        BadField(name: "num_kv_heads") { $0.numKVHeads = 0 },
        BadField(name: "head_dim") { $0.headDim = 0 },
        BadField(name: "head_dim") { $0.headDim = 1 << 20 },
        BadField(name: "dtype_bytes") { $0.dtypeBytes = 3 },
        BadField(name: "block_tokens") { $0.blockTokens = 0 },
        BadField(name: "block_tokens") { $0.blockTokens = .max },
        BadField(name: "layout") { $0.layout = 7 },
        BadField(name: "max_seqs") { $0.maxSeqs = 0 },
        BadField(name: "max_seqs") { $0.maxSeqs = .max },
        BadField(name: "max_seq_tokens") { $0.maxSeqTokens = 0 },
        BadField(name: "max_seq_tokens") { $0.maxSeqTokens = .max },
        BadField(name: "memory_bytes") { $0.memoryBytes = 0 },
        BadField(name: "page_bytes") { $0.pageBytes = 0 },
        BadField(name: "page_bytes") { $0.pageBytes = 3000 },
        BadField(name: "page_bytes") { $0.pageBytes = 1 << 40 },
        BadField(name: "numa_node") { $0.numaNode = -2 },
        BadField(name: "metadata_only") { $0.metadataOnly = 2 },
        BadField(name: "offload_queue_depth") { $0.offloadQueueDepth = 31 },
        BadField(name: "offload_queue_depth") { $0.offloadQueueDepth = 1025 },
    ])
    func aFieldOutOfRangeIsInvalidAndNamed(field: BadField) {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        field.set(&c)
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: [field.name])
    }

    @Test func metadataOnlyWithTheContiguousLayoutIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
        c.metadataOnly = 1
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["metadata"])
    }

    /// A contiguous budget of more page groups than a pool indexes (2^31 groups of 4 tensors x
    /// 4 KiB pages here, in 2^23 blocks) is refused naming both: the pool once capped itself at
    /// 2^30 groups while the engine reported the whole budget.
    @Test func aContiguousBudgetOfMorePageGroupsThanAPoolIndexesIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
        c.pageBytes = 4096
        c.blockTokens = 65536
        c.maxSeqTokens = 65536
        c.memoryBytes = 1 << 45
        expectStatus(createStatus(c), KVC_ERR_INVALID_ARGUMENT, mentioning: ["2147483648 page groups", "1073741824", "page_bytes"])
        c.memoryBytes = 1 << 44  // 2^30 groups: held
        #expect(createStatus(c) == KVC_OK, "\(String(cString: kvc_last_error()))")
    }

    // A large memory_bytes is a valid request (the budget is a ceiling, memory is committed on
    // demand): creating the engine either works or returns a status saying why not, never an
    // abort. These run in a child process (exit tests) so that a regression cannot take the test
    // run down or allocate the machine's memory.

    /// A budget past what a memory file holds (2^63 - 1 bytes; 4095 blocks of 2^52 bytes here,
    /// within the block limit) is out of memory naming memory_bytes: ftruncate's EINVAL
    /// made it an invalid argument naming a system call (helper-65).
    @Test func aBudgetPastAMemoryFileIsOutOfMemoryNamingIt() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.numLayers = 1024
            c.numKVHeads = 1024
            c.headDim = 4096
            c.dtypeBytes = 8
            c.blockTokens = 65536
            c.maxSeqs = 1
            c.memoryBytes = UInt64.max
            exitWhenCreateReturns(c, KVC_ERR_OUT_OF_MEMORY, mentioning: "memory_bytes 18446744073709551615 is more than a memory file holds")
        }
    }

    @Test func aOneTebibytePagedBudgetIsAStatusNotAnAbort() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.memoryBytes = 1 << 40
            exitAfterCreate(c)
        }
    }

    @Test func aLargeContiguousBudgetIsAStatusNotAnAbort() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
            c.memoryBytes = 64 << 30
            exitAfterCreate(c)
        }
    }

    /// A block of far more pages than a sequence's range holds: its page list is sized by the
    /// range (8 pages here), not by the block (2^29 + 1 pages: 16 x 2^29 x 4 bytes once, an
    /// allocation whose failure ended the process).
    @Test func aContiguousBlockLargerThanASequenceSizesItsMetadataByTheSequence() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
            c.numLayers = 1
            c.numKVHeads = 1024
            c.headDim = 4096
            c.dtypeBytes = 8
            c.blockTokens = 65536
            c.maxSeqs = 16
            c.maxSeqTokens = 1
            c.memoryBytes = 1 << 30
            exitWhenCreateReturns(c, KVC_OK)
        }
    }

    /// Contiguous metadata the OS refuses (5.3 GiB for 2^28 page groups and 2^20 blocks of
    /// 1 MiB, past the child's 2 GiB data segment, after the pool's own 1 GiB) is a status
    /// naming it: Swift's allocation ended the process there.
    @Test func contiguousMetadataTheOSRefusesIsOutOfMemory() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
            c.blockTokens = 65536
            c.maxSeqTokens = 65536
            c.memoryBytes = 1 << 42
            exitWhenCreateReturns(c, KVC_ERR_OUT_OF_MEMORY, mentioning: "contiguous layout's metadata")
        }
    }

    // A process out of file descriptors: DescriptorLimitABITests.

    @Test func aLargeMetadataOnlyBudgetIsAStatusNotAnAbort() async {
        await #expect(processExitsWith: .success) {
            var c = CConfig.small(KVC_LAYOUT_PAGED)
            c.metadataOnly = 1
            c.memoryBytes = 64 << 30
            exitAfterCreate(c)
        }
    }

    @Test func aContiguousShapeBeyondTheAddressSpaceIsOutOfMemory() {
        var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
        c.numLayers = 1024
        c.numKVHeads = 1024
        c.headDim = 128
        c.maxSeqs = 4096
        c.maxSeqTokens = 65536
        c.blockTokens = 16
        c.memoryBytes = 1 << 30
        #expect(createStatus(c) == KVC_ERR_OUT_OF_MEMORY)
        expectStatus(KVC_ERR_OUT_OF_MEMORY, KVC_ERR_OUT_OF_MEMORY, mentioning: ["address space", "max_seqs"])
    }

    /// Every size at its maximum (2^62 bytes of memory, so the pool is made): the address space
    /// of 65536 x 2048 tensors x 2^49 bytes = 2^76 passes 2^64, and the message said "needs 0
    /// GiB" (the product wrapped); it says 2^46 GiB.
    @Test func aContiguousShapePast2To64BytesIsNamedWithItsTrueSize() {
        var c = CConfig.small(KVC_LAYOUT_CONTIGUOUS)
        c.numLayers = 1024
        c.numKVHeads = 1024
        c.headDim = 4096
        c.dtypeBytes = 8
        c.maxSeqs = 65536
        c.maxSeqTokens = 1 << 24
        c.blockTokens = 65536
        c.memoryBytes = 1 << 62
        c.pageBytes = 2 << 20
        #expect(createStatus(c) == KVC_ERR_OUT_OF_MEMORY)
        expectStatus(KVC_ERR_OUT_OF_MEMORY, KVC_ERR_OUT_OF_MEMORY, mentioning: ["needs 70368744177664 GiB of address space", "max_seqs"])
        #expect(!String(cString: kvc_last_error()).contains(" 0 GiB"))
    }

    /// A paged budget past the address space (2^62 bytes in 2^21 blocks, within the block
    /// limit) said only "creating the block arena failed: Cannot allocate memory" (helper-134),
    /// naming neither what could not be had nor the field that sized it, as the header promises.
    @Test func aPagedBudgetPastTheAddressSpaceIsNamedWithItsField() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.numLayers = 1
        c.numKVHeads = 1024
        c.headDim = 4096
        c.dtypeBytes = 8
        c.blockTokens = 65536
        c.maxSeqTokens = 65536
        c.memoryBytes = 1 << 62
        #expect(createStatus(c) == KVC_ERR_OUT_OF_MEMORY)
        expectStatus(KVC_ERR_OUT_OF_MEMORY, KVC_ERR_OUT_OF_MEMORY, mentioning: ["of address space for the paged layout's blocks (memory_bytes", "lower memory_bytes"])
    }

    @Test func tooManyBlockTableEntriesIsInvalid() {
        var c = CConfig.small(KVC_LAYOUT_PAGED)
        c.maxSeqs = 65536
        c.maxSeqTokens = 1 << 24
        #expect(createStatus(c) == KVC_ERR_INVALID_ARGUMENT)
        expectStatus(KVC_ERR_INVALID_ARGUMENT, KVC_ERR_INVALID_ARGUMENT, mentioning: ["max_seqs", "max_seq_tokens"])
    }

    @Test func destroyOfNullIsANoOp() {
        kvc_engine_destroy(nil)
    }
}
