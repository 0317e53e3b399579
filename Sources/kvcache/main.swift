print("kvcache")
