import KVCache
