/// The version of the C ABI (`KVC_ABI_VERSION` of include/kvcache.h, which the ABI client test
/// checks `kvc_abi_version()` against): bumped only when an existing function or field changes
/// meaning (appending fields or functions does not). The one version of this package:
/// libkvcache's `kvc_abi_version` returns it and `kvcache-cli --version` prints it, both built
/// from the same sources.
public let kvcacheABIVersion: UInt32 = 1
