import KVCache
import Testing
@testable import KVCacheABI

@Suite struct StatusNameTests {
    @Test(arguments: [
        (0, "KVC_OK"), (-1, "KVC_ERR_INVALID_ARGUMENT"), (-2, "KVC_ERR_NOT_FOUND"), (-3, "KVC_ERR_EXISTS"),
        (-4, "KVC_ERR_OUT_OF_MEMORY"), (-5, "KVC_ERR_BUFFER_TOO_SMALL"), (-6, "KVC_ERR_IO"),
        (-7, "KVC_ERR_UNSUPPORTED"), (-8, "KVC_ERR_INTERNAL"),
    ] as [(Int32, String)])
    func statusNameIsTheHeadersName(code: Int32, name: String) {
        #expect(String(cString: kvc_status_name(code)) == name)
    }

    @Test(arguments: [1, -9, 42, Int32.min, Int32.max] as [Int32])
    func unknownStatusIsNamedUnknown(code: Int32) {
        #expect(String(cString: kvc_status_name(code)) == "KVC_ERR_UNKNOWN")
    }

    @Test func everyEngineErrorCodeHasAName() {
        for code in KVError.Code.allCases {
            #expect(String(cString: kvc_status_name(code.rawValue)) != "KVC_ERR_UNKNOWN", "\(code)")
        }
    }

    @Test func theSameCodeGetsTheSamePointer() {
        #expect(kvc_status_name(-2) == kvc_status_name(-2), "names are static, not built per call")
    }

    @Test func abiVersionIsOne() {
        #expect(kvc_abi_version() == 1)
    }
}
