"""Table 2: RoBERTa masked-language-model pretraining under five masking schemes (appendix C.6).

    python benchmarks/general/language/roberta_mlm.py --mode quick            # CPU, minutes
    python benchmarks/general/language/roberta_mlm.py --mode quick --glue-dir GLUE
    python benchmarks/general/language/roberta_mlm.py --mode full-medium \\
        --corpus FINEWEB_DIR --tokenizer ROBERTA_TOKENIZER_DIR --glue-dir GLUE   # GPU

Schemes (one masking ratio per mini-batch, drawn by
:class:`scr2mae.integrations.transformers.R2MAEDataCollator`, the drop-in replacement of
``DataCollatorForLanguageModeling``, with 80/10/10 replacement): MLM default (0.15), fixed 0.4,
MDLM (U(0, 1)), dynamic (linear decay 0.4 -> 0.15 over training, the step supplied by
:class:`scr2mae.integrations.transformers.MaskingStepCallback`) and R2MAE (U(0.15, 0.4)).

Quick mode (everything ships with the machine): the corpus is Python's bundled documentation
text (``pydoc_data.topics``, ~465k characters, 79 topics) cut into 48-word passages, 15% of
which are held out; a byte-level BPE tokenizer is trained on the training passages with
``tokenizers``; a tiny RoBERTa (2 layers, width 96) is pretrained with each scheme and
evaluated by (a) masked-token accuracy on the held-out passages at masking ratios 0.15-0.8
(every masked token replaced by ``<mask>``, the same masks for every scheme) and (b) a small
downstream task constructed from the same corpus: *which of the 8 largest documentation topics
does a 48-word passage come from* (8-way classification; training passages for fine-tuning,
held-out passages for accuracy; the majority-class rate is printed as the chance level). The
passage split is made before tokenizer training and pretraining, so the held-out passages are
unseen by every stage. With ``--glue-dir``, GLUE tasks found there (``mnli``, ``qqp``, ``sst2``,
``qnli``; see ``_glue.py`` for the local layouts) are fine-tuned too (5 epochs, lr 2e-5, batch 32,
mean of the fine-tuning seeds), giving the columns of Table 2 with the average rank.

Full modes (``full-medium``: RoBERTa-medium, 8 layers x 512; ``full-base``: RoBERTa-base) read a
local pretraining corpus (``datasets.load_from_disk`` folder with a ``text`` column, e.g. a saved
FineWeb sample-10BT shard) and a local tokenizer folder; sequence length 128, AdamW, weight decay
0.01, warm-up 3%, linear decay, learning rate 7e-4 / 3e-4, effective batch 2048 through gradient
accumulation. Writes ``roberta_mlm_*.csv/.md`` and PNG figures under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail
from _glue import GLUE_TASKS, load_glue_local

SCHEMES = {
    "MLM default": ("fixed", {"mask_ratio": 0.15}),
    "Fixed MR 0.4": ("fixed", {"mask_ratio": 0.4}),
    "MDLM": ("mdlm", {}),
    "Dynamic MR": ("dynamic", {"start": 0.4, "end": 0.15}),
    "R2MAE": ("r2mae", {"p_min": 0.15, "p_max": 0.4}),
}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
#: the training recipe of the two full sizes (the paper's)
FULL_RECIPE = dict(
    vocab=None,
    max_len=128,
    epochs=1,
    batch=128,
    accum=16,
    ft_epochs=5,
    ft_lr=2e-5,
    ft_seeds=(0, 1, 2),
    glue_epochs=5,
    glue_lr=2e-5,
    max_passages=None,
    eval_ratios=(0.15, 0.3, 0.45, 0.6, 0.8),
)
MODES = {
    "smoke": dict(
        hidden=32,
        layers=1,
        heads=2,
        inter=64,
        vocab=400,
        max_len=48,
        epochs=1,
        batch=32,
        accum=1,
        lr=1e-3,
        ft_epochs=1,
        ft_lr=1e-3,
        ft_seeds=(0,),
        glue_epochs=1,
        glue_lr=1e-3,
        max_passages=240,
        eval_ratios=(0.15, 0.5),
    ),
    "quick": dict(
        hidden=96,
        layers=2,
        heads=4,
        inter=384,
        vocab=2000,
        max_len=80,
        epochs=8,
        batch=32,
        accum=1,
        lr=1e-3,
        ft_epochs=4,
        ft_lr=3e-4,
        ft_seeds=(0, 1),
        glue_epochs=5,
        glue_lr=2e-5,
        max_passages=None,
        eval_ratios=(0.15, 0.3, 0.45, 0.6, 0.8),
    ),
    # the full sizes: the paper's recipe at two widths and depths
    "full-medium": dict(FULL_RECIPE, hidden=512, layers=8, heads=8, inter=2048, lr=7e-4),
    "full-base": dict(FULL_RECIPE, hidden=768, layers=12, heads=12, inter=3072, lr=3e-4),
}
N_TOPICS = 8


# --------------------------------------------------------------------------------- corpus
def pydoc_passages(words: int = 48) -> list[tuple[str, str]]:
    """``(topic, passage)`` pairs: every topic of ``pydoc_data.topics`` cut into word windows."""
    from pydoc_data.topics import topics

    out = []
    for topic in sorted(topics):
        tokens = topics[topic].split()
        for i in range(0, max(1, len(tokens) - words // 2), words):
            out.append((topic, " ".join(tokens[i : i + words])))
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained with ``tokenizers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def encode(tokenizer, texts, max_len: int, pairs=None) -> list[dict]:
    """Tokenise texts (or text pairs) into lists of ids with their special-token masks."""
    enc = tokenizer(
        texts, pairs, truncation=True, max_length=max_len, return_special_tokens_mask=True
    )
    return [
        {"input_ids": ids, "special_tokens_mask": sm}
        for ids, sm in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)
    ]


def make_model(cfg, tokenizer, n_labels: int | None = None):
    """A RoBERTa MLM (or sequence classifier when ``n_labels`` is given) sized by ``cfg``."""
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        intermediate_size=cfg["inter"],
        max_position_embeddings=cfg["max_len"] + 2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
        num_labels=n_labels or 2,
    )
    if n_labels is None:
        return RobertaForMaskedLM(config)
    return RobertaForSequenceClassification(config)


def _schedule_lr(opt, step, total, base, warmup=0.03):
    warm = max(1, int(warmup * total))
    lr = (
        base * (step + 1) / warm
        if step < warm
        else base * max(0.0, (total - step) / (total - warm))
    )
    for group in opt.param_groups:
        group["lr"] = lr


# ------------------------------------------------------------------------------- training
def pretrain(model, sequences, collator, cfg, seed, device):
    """MLM pretraining; the collator's step comes from a ``MaskingStepCallback``.

    ``transformers.Trainer`` needs ``accelerate``, which this machine lacks; the loop below
    calls the same callback hooks the Trainer would (train begin, step begin, step end).
    """
    from transformers import TrainerControl, TrainerState

    from scr2mae.integrations.transformers import MaskingStepCallback

    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        sequences,
        batch_size=cfg["batch"],
        shuffle=True,
        collate_fn=collator,
        generator=g,
        drop_last=True,
    )
    total = max(1, cfg["epochs"] * len(loader) // cfg["accum"])
    callback, state, control = MaskingStepCallback(collator), TrainerState(), TrainerControl()
    state.max_steps = total
    callback.on_train_begin(None, state, control)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    model.train()
    losses, ratios, micro = [], [], 0
    for _ in range(cfg["epochs"]):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            ratios.append(float(collator.last_ratio.mean()))
            loss = model(**batch).loss / cfg["accum"]
            loss.backward()
            micro += 1
            if micro % cfg["accum"]:
                continue
            callback.on_step_begin(None, state, control)
            _schedule_lr(opt, state.global_step, total, cfg["lr"])
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()) * cfg["accum"])
            state.global_step += 1
            callback.on_step_end(None, state, control)
    return model.eval(), float(np.mean(ratios)), float(np.mean(losses[-20:]))


@torch.no_grad()
def masked_token_accuracy(model, sequences, tokenizer, ratio, device, seed=1234, batch=64):
    """Top-1 accuracy at masked positions, every masked token replaced by ``<mask>``."""
    from scr2mae.integrations.transformers import R2MAEDataCollator

    collator = R2MAEDataCollator(
        tokenizer,
        "fixed",
        {"mask_ratio": ratio},
        mask_replace_prob=1.0,
        random_replace_prob=0.0,
        seed=seed,
    )
    correct = total = 0
    for i in range(0, len(sequences), batch):
        b = {k: v.to(device) for k, v in collator(sequences[i : i + batch]).items()}
        labels = b.pop("labels")
        pred = model(**b).logits.argmax(-1)
        m = labels != -100
        correct += int((pred[m] == labels[m]).sum())
        total += int(m.sum())
    return correct / max(total, 1)


def fine_tune(mlm_model, cfg, tokenizer, train, test, n_labels, epochs, lr, seed, device, batch=32):
    """Fine-tune a classifier initialised from the pretrained encoder; return test accuracy.

    ``train``/``test`` are ``(encoded sequences, labels)``.
    """
    torch.manual_seed(seed)
    model = make_model(cfg, tokenizer, n_labels).to(device)
    missing = model.roberta.load_state_dict(mlm_model.roberta.state_dict(), strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"encoder weights did not transfer: {missing.unexpected_keys}")
    g = torch.Generator().manual_seed(seed)
    seqs, labels = train
    total = max(1, epochs * math.ceil(len(seqs) / batch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(seqs), generator=g).tolist()
        for i in range(0, len(seqs), batch):
            idx = perm[i : i + batch]
            b = tokenizer.pad(
                [{"input_ids": seqs[j]["input_ids"]} for j in idx], return_tensors="pt"
            )
            _schedule_lr(opt, step, total, lr, warmup=0.06)
            out = model(**{k: v.to(device) for k, v in b.items()})
            loss = F.cross_entropy(
                out.logits, torch.as_tensor([labels[j] for j in idx], device=device)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    seqs, labels = test
    correct = 0
    with torch.no_grad():
        for i in range(0, len(seqs), 128):
            b = tokenizer.pad(
                [{"input_ids": s["input_ids"]} for s in seqs[i : i + 128]], return_tensors="pt"
            )
            pred = model(**{k: v.to(device) for k, v in b.items()}).logits.argmax(-1).cpu()
            correct += int((pred == torch.as_tensor(labels[i : i + 128])).sum())
    return correct / len(seqs)


# -------------------------------------------------------------------------------- running
def _quick_data(cfg, seed=0):
    passages = pydoc_passages()
    rng = np.random.default_rng(seed)
    if cfg["max_passages"] is not None:
        keep = rng.permutation(len(passages))[: cfg["max_passages"]]
        passages = [passages[i] for i in sorted(keep)]
    is_test = rng.random(len(passages)) < 0.15
    train = [p for p, t in zip(passages, is_test, strict=True) if not t]
    test = [p for p, t in zip(passages, is_test, strict=True) if t]
    sizes = pd.Series([t for t, _ in train]).value_counts()
    topics = sorted(sizes.index[:N_TOPICS])
    return train, test, topics


def _local_corpus(path, tokenizer_dir, cfg, max_docs):
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    if "text" not in ds.column_names:
        raise ValueError(f"corpus at {path} has no 'text' column.")
    if max_docs is not None:
        ds = ds.select(range(min(max_docs, len(ds))))
    texts = ds["text"]
    n_test = max(1, len(texts) // 100)
    return (
        tokenizer,
        encode(tokenizer, texts[n_test:], cfg["max_len"]),
        encode(tokenizer, texts[:n_test], cfg["max_len"]),
    )


def _glue_encoded(tokenizer, dataset, spec, max_len, limit):
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    a = list(dataset[spec.text_keys[0]])
    b = list(dataset[spec.text_keys[1]]) if len(spec.text_keys) > 1 else None
    return encode(tokenizer, a, max_len, b), [int(v) for v in dataset["label"]]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Pretrain every scheme, evaluate, write tables and figures; return the Table-2 frame."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--epochs", type=int, default=None, help="override pretraining epochs")
    parser.add_argument("--glue-dir", default=None, help="folder with local GLUE task folders")
    parser.add_argument(
        "--glue-tasks", nargs="+", default=list(GLUE_TASKS), choices=list(GLUE_TASKS)
    )
    parser.add_argument("--glue-limit", type=int, default=None, help="training rows per task")
    parser.add_argument("--corpus", default=None, help="full modes: load_from_disk text corpus")
    parser.add_argument("--tokenizer", default=None, help="full modes: local tokenizer folder")
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/language/roberta")
    args = parser.parse_args(argv)
    cfg = dict(MODES[args.mode])
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    full = args.mode.startswith("full")
    if full and (args.corpus is None or args.tokenizer is None):
        parser.error(f"--mode {args.mode} needs --corpus and --tokenizer")
    if args.glue_dir is not None and not Path(args.glue_dir).is_dir():
        parser.error(f"--glue-dir {args.glue_dir} is not a folder")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    from scr2mae.integrations.transformers import R2MAEDataCollator

    downstream = {}
    if full:
        tokenizer, train_seqs, test_seqs = _local_corpus(
            args.corpus, args.tokenizer, cfg, args.max_docs
        )
        print(f"corpus: {len(train_seqs)} training / {len(test_seqs)} held-out documents")
    else:
        train_p, test_p, topics = _quick_data(cfg, args.seed)
        tokenizer = train_tokenizer([t for _, t in train_p], cfg["vocab"])
        train_seqs = encode(tokenizer, [t for _, t in train_p], cfg["max_len"])
        test_seqs = encode(tokenizer, [t for _, t in test_p], cfg["max_len"])
        tid = {t: i for i, t in enumerate(topics)}
        tr = [(s, tid[p[0]]) for s, p in zip(train_seqs, train_p, strict=True) if p[0] in tid]
        te = [(s, tid[p[0]]) for s, p in zip(test_seqs, test_p, strict=True) if p[0] in tid]
        name = f"Doc-topic ({len(topics)}-way)"
        downstream[name] = (
            ([s for s, _ in tr], [y for _, y in tr]),
            ([s for s, _ in te], [y for _, y in te]),
            len(topics),
        )
        chance = pd.Series([y for _, y in te]).value_counts(normalize=True).max()
        print(
            f"pydoc corpus: {len(train_p)} training / {len(test_p)} held-out 48-word passages, "
            f"tokenizer vocab {len(tokenizer)}; downstream task {name} over {topics}: "
            f"{len(tr)} train / {len(te)} test passages, majority-class rate {chance:.3f}"
        )
    if args.glue_dir is not None:
        for task in args.glue_tasks:
            if not (Path(args.glue_dir) / task).is_dir():
                print(f"GLUE {task}: not found under {args.glue_dir}, skipped")
                continue
            tr_ds, ev_ds, spec = load_glue_local(args.glue_dir, task)
            downstream[spec.name] = (
                _glue_encoded(tokenizer, tr_ds, spec, cfg["max_len"], args.glue_limit),
                _glue_encoded(tokenizer, ev_ds, spec, cfg["max_len"], None),
                spec.n_labels,
            )
            print(f"GLUE {spec.name}: {len(tr_ds)} train / {len(ev_ds)} evaluation rows")

    mlm_rows, ds_rows, start = [], [], time.perf_counter()
    for scheme in args.schemes:
        kind, params = SCHEMES[scheme]
        collator = R2MAEDataCollator(tokenizer, kind, params, seed=args.seed)
        torch.manual_seed(args.seed)
        model = make_model(cfg, tokenizer).to(device)
        model, mean_ratio, final_loss = pretrain(
            model, train_seqs, collator, cfg, args.seed, device
        )
        row = {"scheme": scheme, "mean_train_ratio": mean_ratio, "final_train_loss": final_loss}
        for r in cfg["eval_ratios"]:
            row[f"acc@{r}"] = masked_token_accuracy(model, test_seqs, tokenizer, r, device)
        mlm_rows.append(row)
        drow = {"Method": scheme}
        for task, (tr, te, n_labels) in downstream.items():
            glue = not task.startswith("Doc-topic")
            accs = [
                fine_tune(
                    model,
                    cfg,
                    tokenizer,
                    tr,
                    te,
                    n_labels,
                    cfg["glue_epochs"] if glue else cfg["ft_epochs"],
                    cfg["glue_lr"] if glue else cfg["ft_lr"],
                    s,
                    device,
                )
                for s in cfg["ft_seeds"]
            ]
            drow[task] = 100 * float(np.mean(accs))
        ds_rows.append(drow)
        print(
            f"[{time.perf_counter() - start:6.1f}s] {scheme}: mean ratio {mean_ratio:.3f}, "
            + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("acc@"))
            + "".join(f", {k} {v:.1f}" for k, v in drow.items() if k != "Method")
        )
    mlm = pd.DataFrame(mlm_rows).set_index("scheme")
    table = pd.DataFrame(ds_rows).set_index("Method")
    if len(table.columns):
        table["Rank"] = table.rank(axis=0, ascending=False, method="average").mean(axis=1)
    out = tail.output_dir(args.out)
    mlm.to_csv(out / "roberta_mlm_masked_accuracy.csv")
    table.to_csv(out / "roberta_mlm_downstream.csv")
    md = (
        f"# RoBERTa MLM schemes ({args.mode} mode, {cfg['epochs']} pretraining epoch(s), "
        f"{cfg['layers']} layers x {cfg['hidden']})\n\n"
        "## Masked-token accuracy on held-out text at each evaluation masking ratio\n\n"
        + mlm.to_markdown(floatfmt=".3f")
        + "\n\n## Downstream accuracy (%) in the layout of Table 2 "
        f"(mean of {len(cfg['ft_seeds'])} fine-tuning seed(s); Rank = mean rank over tasks)\n\n"
        + (table.to_markdown(floatfmt=".2f") if len(table.columns) else "(no downstream task)")
        + "\n"
    )
    (out / "roberta_mlm.md").write_text(md)
    _plot(out / "roberta_mlm_masked_accuracy.png", mlm, cfg["eval_ratios"])
    print(md)
    return table


def _plot(path, mlm, ratios) -> None:
    plt = tail.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for scheme, row in mlm.iterrows():
        ax.plot(ratios, [row[f"acc@{r}"] for r in ratios], marker="o", label=scheme)
    ax.set_xlabel("evaluation masking ratio")
    ax.set_ylabel("masked-token accuracy (held-out)")
    ax.set_title("RoBERTa MLM schemes")
    ax.legend(fontsize=7)
    tail.save_figure(fig, path)


if __name__ == "__main__":
    main()
