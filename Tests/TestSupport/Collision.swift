/// Blocks of 16 tokens whose public BLOCK HASH collides, found by helper-190's second-preimage
/// search (revinterop r1/collide.c: every round of the hash is a bijection, so the last two
/// tokens of a block can be solved for in ~2^32 steps; computed once, kept as constants).
public enum Collision {
    /// A known block (a system prompt's, say).
    public static let victim: [Int32] = Array(1000...1015)
    /// Another block, first token changed and the last three chosen: same hash, salt 0.
    public static let attacker: [Int32] = [666, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
                                    2000, -2_140_903_937, 630_570_421]
    /// Under salt 1, the same hash as `victim` under salt 2 (`collide 2 1`).
    public static let crossSaltAttacker: [Int32] = [666, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
                                             2000, 992_167_083, 1_416_105_133]
    /// Under salt 1, a block whose `fmix64` is 0 (`ZERO=1 collide 0 1`): the hash of version 1
    /// before the zero rule, and the unsalted root.
    public static let zeroUnderSalt1: [Int32] = [666, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
                                          2001, -1_829_901_867, 891_293_913]
    /// The block after `zeroUnderSalt1` in the alias (r1/alias0.c), and an unsalted prompt's first.
    public static let follower: [Int32] = Array(5000...5015)
}
