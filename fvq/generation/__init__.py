"""The second stage (Tables 2 and 11): LlamaGen's class-conditional GPT, the token caches of a finished
tokenizer run, the generator's training loop with gFID / precision / recall."""
