"""The folders babelprune writes and reads back: one module per saved format.

    hf          plain Hugging Face folders, the part every format shares: weights
                files checked whole, tensors read with errors naming the file
    pruned      one-shot pruning: HF folder + sparse/ copy + per-language mask bank
    structured  narrower or fewer blocks: HF folder whose config records the widths
    dynamic     Dynamic Sparsification: full-width HF folder + ranked-unit metadata
                (+ task head), and slicing it to any width
    finetuned   an encoder fine-tuned on a task: HF folder + sparse/ copy + task head
    registry    which format a folder holds (marker file -> loader), for `load_model`
    gguf        export only: a causal LM and its tokenizer as one GGUF file (llama.cpp)

Loading (`babelprune.formats.loading`) and pruning both import from here;
nothing here imports `babelprune.formats.loading`, so the two never import
each other.
"""
