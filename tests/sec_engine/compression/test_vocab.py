from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sec_engine.compression import prune_vocabulary, remap_input_ids, write_pruned_tokenizer

from .tiny_models import VOCAB, build_tiny, make_inputs

pytestmark = pytest.mark.unit

_WORDS = ["the", "movie", "was", "great", "dull", "fun", "plot", "a", "play", "##ing", "##s", "!"]
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + _WORDS)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def test_pruned_embedding_gives_the_same_outputs(arch: str) -> None:
    model = build_tiny(arch)
    inputs = make_inputs(arch, pair=True)
    with torch.no_grad():
        before = model(**inputs).logits
    pad = model.config.pad_token_id
    vmap = prune_vocabulary(
        model, inputs["input_ids"], special_token_ids=[0, 1, 2, 3], unk_token_id=3
    )
    used = int(torch.unique(inputs["input_ids"]).numel())
    assert vmap.new_size <= used + 4
    assert vmap.new_size < VOCAB
    assert model.get_input_embeddings().num_embeddings == vmap.new_size
    assert model.config.vocab_size == vmap.new_size
    assert int(vmap.old_to_new[pad]) == pad  # position ids of RoBERTa / MPNet depend on it
    remapped = remap_input_ids(inputs["input_ids"], vmap)
    with torch.no_grad():
        after = model(**{**inputs, "input_ids": remapped}).logits
    torch.testing.assert_close(after, before)
    unseen = int(
        next(
            i
            for i in range(VOCAB)
            if i not in set(inputs["input_ids"].flatten().tolist()) and i > 3
        )
    )
    assert int(vmap.old_to_new[unseen]) == vmap.unk_id


def test_wordpiece_tokenizer_emits_the_new_ids(tmp_path: Path) -> None:
    tokenizer = _wordpiece_tokenizer()
    texts = ["The movie was great!", "a dull plot"]
    pairs = ["playing", "the plots"]
    old = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    model = build_tiny("bert")
    vmap = prune_vocabulary(
        model,
        old["input_ids"],
        special_token_ids=tokenizer.all_special_ids,
        unk_token_id=tokenizer.unk_token_id,
    )
    write_pruned_tokenizer(tokenizer, vmap, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    new = reloaded(texts, pairs, padding=True, return_tensors="pt")
    assert torch.equal(new["input_ids"], remap_input_ids(old["input_ids"], vmap))
    assert torch.equal(new["token_type_ids"], old["token_type_ids"])
    assert torch.equal(new["attention_mask"], old["attention_mask"])
    assert len(reloaded) == vmap.new_size
    # "fun" was never seen: it is unknown to the pruned tokenizer
    assert reloaded("fun")["input_ids"][1] == vmap.unk_id


def test_bpe_tokenizer_is_refused_clearly(tmp_path: Path) -> None:
    vocab = {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "ab": 4}
    backend = Tokenizer(models.BPE(vocab, [("a", "b")], unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>"
    )
    model = build_tiny("bert")
    vmap = prune_vocabulary(model, [4], special_token_ids=[0, 1], unk_token_id=1)
    with pytest.raises(NotImplementedError, match="remap_input_ids"):
        write_pruned_tokenizer(tokenizer, vmap, tmp_path)
