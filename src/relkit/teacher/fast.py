"""Scoring an encoder teacher with its last layer cut down to the one token the head reads.

A BERT-style classifier reads only the first token's vector of the last layer. That layer's keys
and values need every token, but its query, attention output and feed-forward are needed for the
first token alone: computing them for one token instead of all removes most of the last layer's
work (about 14% of a 6-layer MiniLM) and changes no output beyond float rounding (tested against
the model's own forward). Models whose layers are not laid out like BERT's keep the full forward.
"""
from __future__ import annotations

import torch

# model types whose layers are BertLayer-shaped (attention.self.{query,key,value},
# attention.output, intermediate, output) and whose head reads the first token
FIRST_TOKEN_TYPES = {"bert", "roberta", "xlm-roberta"}


class FirstTokenClassifier(torch.nn.Module):
    """`model(input_ids, attention_mask).logits` of a BERT/RoBERTa/XLM-R sequence classifier, with
    the last layer computed for the first token only."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.base = model.base_model
        self.layers = self.base.encoder.layer
        self.pooler = getattr(self.base, "pooler", None)

    @staticmethod
    def supports(model) -> bool:
        config = model.config
        base = getattr(model, "base_model", None)
        return (getattr(config, "model_type", None) in FIRST_TOKEN_TYPES and not config.is_decoder
                and base is not None and hasattr(base, "encoder") and len(base.encoder.layer) > 0
                and not hasattr(model, "peft_config")
                and getattr(config, "position_embedding_type", None) in (None, "absolute"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        h = self.base.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=self.base.config, inputs_embeds=h, attention_mask=attention_mask)
        for layer in self.layers[:-1]:
            h = layer(h, mask)
        last = self.layers[-1]
        attention = last.attention.self
        b, t, _ = h.shape
        heads, size = attention.num_attention_heads, attention.attention_head_size
        q = attention.query(h[:, :1]).view(b, 1, heads, size).transpose(1, 2)
        k = attention.key(h).view(b, t, heads, size).transpose(1, 2)
        v = attention.value(h).view(b, t, heads, size).transpose(1, 2)
        keep = attention_mask[:, None, None, :].bool()
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                                   scale=attention.scaling)
        context = context.transpose(1, 2).reshape(b, 1, heads * size)
        first = last.attention.output(context, h[:, :1])
        first = last.output(last.intermediate(first), first)
        if self.pooler is not None:           # BERT: pooler (dense + tanh on the first token), classifier
            return self.model.classifier(self.model.dropout(self.pooler(first)))
        return self.model.classifier(first)   # RoBERTa / XLM-R: the head takes features[:, 0]


def logits_fn(model):
    """A function (input_ids, attention_mask) -> logits for scoring: the first-token forward where
    the architecture allows it, the model's own forward otherwise."""
    if FirstTokenClassifier.supports(model):
        fast = FirstTokenClassifier(model)
        return lambda input_ids, attention_mask: fast(input_ids, attention_mask)
    return lambda input_ids, attention_mask: model(input_ids=input_ids, attention_mask=attention_mask).logits
