"""Tiny random Llama models built from a real config, for tests and toy benchmarks (no download)."""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``corpus`` in well under a second, with ChatML specials.

    As in SmolLM2, EOS and PAD are both ``<|im_end|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
    )


def save_with_tokenizer(model, tokenizer, path: str | Path) -> Path:
    """Save ``model`` (generating up to the tokenizer's EOS, padded with its PAD) and ``tokenizer`` to ``path``."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llama(
    path: str | Path,
    corpus: list[str],
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised 2-layer Llama and its tokenizer to ``path``; returns the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(corpus, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return save_with_tokenizer(model, tokenizer, path)


CHAR_TEMPLATE = "{{ messages[-1]['content'] }}"  # the prompt is the user's text alone


def build_char_tokenizer(alphabet: str):
    """One token per character of ``alphabet``, plus ``</s>`` as EOS and PAD."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"</s>": 0, **{ch: i + 1 for i, ch in enumerate(dict.fromkeys(alphabet))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="</s>",
                                   unk_token="</s>", chat_template=CHAR_TEMPLATE)


def build_char_llama(alphabet: str, *, hidden_size: int = 128, num_layers: int = 2, seed: int = 0):
    """A character-level Llama (about 0.5M parameters at the defaults) and its tokenizer, in memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer(alphabet)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_forced_llama(path: str | Path, alphabet: str, next_char: dict[str, str]) -> Path:
    """Save a one-layer character Llama that always writes the same continuation: after character ``c`` it
    puts all but 1e-100 of its probability on ``next_char[c]`` ("" for EOS; EOS for a character not in the map),
    at any temperature near 1. Its layers add nothing to the residual stream, so the next token depends on the
    current one alone. For tests that need two generators (ours, TRL's) to produce the same tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer(alphabet)
    vocab = len(tokenizer)
    hidden = -(-vocab // 8) * 8  # one dimension per token, rounded up to 4 heads of an even size
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        for layer in model.model.layers:  # no attention or MLP output: each position's state is its own token's
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for token in range(vocab):
            model.model.embed_tokens.weight[token, token] = 1.0  # after RMSNorm: sqrt(hidden) on its own axis
            following = next_char.get(tokenizer.convert_ids_to_tokens(token), "")
            model.lm_head.weight[ids(following) if following else tokenizer.eos_token_id, token] = 50.0
    return save_with_tokenizer(model, tokenizer, path)
