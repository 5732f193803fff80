"""Parameter paths from before tlx.models.compose, and from pretraining runs, onto task models.

Task models are `encoder/...` + `head/...` (tlx.models.compose). Two kinds of checkpoints name
their parameters otherwise:
  * task runs written by the per-family classes before the composition (BertForSequence-
    Classification, GptForTokenClassification, WordClassifier, ContextualTagger, ...): their
    head was `classifier/` (a mixture's `classifier_0/`, `classifier_1/`, ...), GPT's decoder
    `decoder/`, the word models' table `embed/` beside `encoder/`, and the contextual models'
    pretrained parts `cove/`, `bilm/`, `embed/`, `scalar_mix/` beside `encoder/`;
  * pretraining runs a task model loads with transfer.init_from: gpt_lm keeps its `decoder/`,
    cove_mt its `cove/`, elmo_lm its `bilm/` (bert_pretrain's `encoder/` already fits).
A model's rules (its registry entry, tlx.models.REGISTRY) rename a path's first segment:
(regex over that segment, replacement). Today's roots (`encoder`, `head`) match no rule, so
renaming is idempotent and a current checkpoint passes through unchanged; roots no rule names
(a pretraining run's `mlm_head/`, cove_mt's `decoder/`, elmo_lm's `softmax/`) stay as they are,
for transfer.ignore to name. Everything here is a pure function over paths or dicts.
"""

import re

Rules = tuple[tuple[str, str], ...]

BERT_TASK: Rules = (("classifier", "head"), (r"classifier_(\d+)", r"head/task_\1"))
GPT_TASK: Rules = (("decoder", "encoder"), ("classifier", "head"))
WORD_TASK: Rules = (("embed", "encoder/embed"), ("classifier", "head"))
CONTEXTUAL_TASK: Rules = (("embed|cove|bilm|scalar_mix", r"encoder/\g<0>"), ("classifier", "head"))


def rename_path(rules: Rules, path: str) -> str:
    """'classifier/dense/kernel' -> 'head/dense/kernel' (first matching rule; else unchanged)."""
    root, sep, rest = path.partition("/")
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, root)
        if match:
            return match.expand(replacement) + sep + rest
    return path


def rename_map(rules: Rules, paths) -> dict[str, str]:
    """{old path: new path} for every path of a params tree; two paths onto one is an error."""
    renamed = {p: rename_path(rules, p) for p in paths}
    seen: dict[str, str] = {}
    for old, new in renamed.items():
        if new in seen:
            raise ValueError(f"parameters {seen[new]} and {old} would both be renamed to {new}")
        seen[new] = old
    return renamed


def rename_within(param_map: dict[str, str], path: str) -> str:
    """A path of a tree that holds params-shaped subtrees (optimizer state:
    'inner_states/train/inner_state/1/mu/classifier/dense/kernel'): the params path it ends in
    renamed by `param_map` (rename_map of the checkpoint's params); other paths unchanged."""
    parts = path.split("/")
    for i in range(len(parts)):
        suffix = "/".join(parts[i:])
        if suffix in param_map:
            return "/".join([*parts[:i], param_map[suffix]])
    return path


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {'a/b/c': leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def migrate_flat(rules: Rules, flat: dict) -> dict:
    """{old path: array} -> {new path: array}."""
    return {new: flat[old] for old, new in rename_map(rules, flat).items()}


def migrate_params(rules: Rules, params: dict) -> dict:
    """A nested params dict (e.g. what Orbax restores without a target) in today's layout."""
    return unflatten(migrate_flat(rules, flatten(params)))
