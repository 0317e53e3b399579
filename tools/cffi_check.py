"""cffi's ABI mode on include/kvcache.h the way a Python server binds it: ffi.cdef on the
header preprocessed with -std=c99 -DKVC_NO_LP64_CHECK (kvcache.h, before the LP64 check),
nothing stripped. Checks that every declaration parses, that every function the header
declares resolves in the library, and that the status codes are visible as constants with
the values of their #defines.

    python3 tools/cffi_check.py path/to/libkvcache.so

Exit 0 when every check passed, 1 otherwise (each failure printed); 77 when cffi is not
installed (tools/run_abi_client.sh then skips it)."""
import os
import re
import subprocess
import sys

try:
    import cffi
except ImportError:
    sys.exit(77)

include = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include")
header = os.path.join(include, "kvcache.h")
source = subprocess.run([os.environ.get("CC", "gcc"), "-E", "-P", "-std=c99", "-DKVC_NO_LP64_CHECK", header],
                        check=True, capture_output=True, text=True).stdout
ffi = cffi.FFI()
ffi.cdef(source)
lib = ffi.dlopen(sys.argv[1])

failures = []
missing = [name for name in sorted(set(re.findall(r"\b(kvc_\w+)\s*\(", source))) if not hasattr(lib, name)]
if missing:
    failures.append("declared but not resolvable: %s" % missing)
defines = dict(re.findall(r"^#define (KVC_(?:OK|ERR_[A-Z_]+))\s+\(?(-?\d+)\)?", open(header).read(), re.M))
if len(defines) != 9:
    failures.append("expected KVC_OK and 8 KVC_ERR_* #defines, found %s" % sorted(defines))
for name, value in defines.items():
    seen = getattr(lib, name, None)
    if seen != int(value):
        failures.append("%s: cffi sees %r, the #define says %s" % (name, seen, value))
    elif ffi.string(lib.kvc_status_name(seen)).decode() != name:
        failures.append("kvc_status_name(%s) is not %s" % (value, name))
for failure in failures:
    print("cffi_check: FAILED:", failure, file=sys.stderr)
if not failures:
    print("cffi_check: OK: %d functions, %d status codes through cffi.cdef of the preprocessed header"
          % (len(set(re.findall(r"\b(kvc_\w+)\s*\(", source))), len(defines)))
sys.exit(1 if failures else 0)
