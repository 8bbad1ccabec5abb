"""Tiny transformers of each family, built from configs with random weights, and a word-level
tokenizer over a fixed vocabulary: real models, small enough to train in a test."""
from __future__ import annotations

from pathlib import Path

WORDS = ("red blue green chair table lamp hose garden paint roller oak wooden gallon feet reel cord metal "
         "steel light bulb led door lock drill bit saw blade query item").split()


def word_tokenizer(family: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS)) + [":"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if family == "encoder":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        kw = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    elif family == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])])
        kw = dict(pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>")
    else:  # decoder: byte-level BPE as Llama 3 / Qwen ship, and no pad token
        from tokenizers import decoders, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["</s>", "<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([" ".join(WORDS), "query: item:\n", *WORDS], trainer=trainer)
        vocab = tok.get_vocab()
        kw = dict(eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **kw), len(vocab)


def build(kind: str, directory: Path) -> Path:
    """Save a tiny base model of `kind` (bert, xlm-roberta, deberta-v2, llama, qwen2, t5) with its tokenizer."""
    import torch
    import transformers as tf

    family = {"llama": "decoder", "qwen2": "decoder", "t5": "t5"}.get(kind, "encoder")
    tokenizer, vocab_size = word_tokenizer(family)
    small = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64)
    if kind == "bert":
        model = tf.BertModel(tf.BertConfig(**small, max_position_embeddings=160, pad_token_id=0))
    elif kind == "xlm-roberta":
        model = tf.XLMRobertaModel(tf.XLMRobertaConfig(**small, max_position_embeddings=160, pad_token_id=0))
    elif kind == "deberta-v2":
        model = tf.DebertaV2Model(tf.DebertaV2Config(**small, max_position_embeddings=160, pad_token_id=0))
    elif kind == "llama":
        model = tf.LlamaModel(tf.LlamaConfig(**small, num_key_value_heads=2, max_position_embeddings=160))
    elif kind == "qwen2":
        model = tf.Qwen2Model(tf.Qwen2Config(**small, num_key_value_heads=2, max_position_embeddings=160))
    elif kind == "t5":
        model = tf.T5Model(tf.T5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                       num_heads=2, pad_token_id=0, eos_token_id=4, decoder_start_token_id=0))
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    model.init_weights() if hasattr(model, "init_weights") else None
    path = directory / f"tiny-{kind}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_blip(directory: Path) -> Path:
    """A tiny BLIP captioner (random weights, 32-pixel images) saved with its processor."""
    import torch
    import transformers as tf

    tokenizer, vocab_size = word_tokenizer("encoder")
    tokenizer = tf.BertTokenizerFast(tokenizer_object=tokenizer._tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                     cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)
    text = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64,
                bos_token_id=tokenizer.cls_token_id, pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    config = tf.BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = tf.BlipForConditionalGeneration(config)
    image_processor = tf.BlipImageProcessor(size={"height": 32, "width": 32})
    processor = tf.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    path = directory / "blip"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_clip(directory: Path) -> Path:
    """A tiny CLIP (random weights, 32-pixel images, 16-wide image features) saved with its image
    processor: an image encoder for the student's visual features."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    config = tf.CLIPConfig(text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=16,
                                            bos_token_id=0, eos_token_id=1, pad_token_id=1),
                           vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=32, patch_size=8),
                           projection_dim=16)
    path = directory / "clip"
    tf.CLIPModel(config).save_pretrained(path)
    tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path
