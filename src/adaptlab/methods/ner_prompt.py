"""Few-shot NER by prompting a causal LM: it lists the entities of a text, one ``type: words`` per line, which are
parsed back to word spans. No training; a floor for token classification.

The prompt names the entity types (with ``task.entity_descriptions`` when given), shows ``shots`` training
sentences that contain entities (seeded) with their answers, then the text. Parsing: each answer line
``<type>: <words>`` whose type is one of the dataset's (case-insensitive) and whose words occur in the sentence
becomes an entity at their first free occurrence; ``none`` means no entity. An answer with neither is *unparsed*:
the sentence gets no entities and the share of such answers is reported (``unparsed_share``).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adaptlab.context import RunContext
from adaptlab.methods.base import METHODS, Method, TorchModelAccounting
from adaptlab.specs import ModelName

PROMPT_FILE = "prompt.json"
LINE = re.compile(r"^\s*[-*]?\s*([A-Za-z][\w-]*)\s*:\s*(.+?)\s*$")


class NerPromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: ModelName | None = Field(None, description="The causal LM that answers (a folder, packaged name such as "
                              "smollm2, or hub id). Default: the ladder's model, which must then be a causal LM.")
    shots: int = Field(3, ge=0, le=32, description="Training sentences with their entities shown before the text.")
    max_new_tokens: int = Field(48, gt=0, le=512, description="Tokens the model may write for one answer.")
    batch_size: int = Field(8, gt=0, description="Prompts generated together.")


def answer_of(words: list[str], tags: list[str]) -> str:
    """The answer a demonstration shows: one ``type: words`` line per entity, or ``none``."""
    from adaptlab.tasks.token_classification.schemes import spans

    lines = [f"{kind}: {' '.join(words[a:b])}" for a, b, kind in spans(tags)]
    return "\n".join(lines) or "none"


def parse_answer(answer: str, words: list[str], types: list[str]) -> tuple[list[str], bool]:
    """(BIO tags, parsed) for a generated answer over ``words``."""
    from adaptlab.tasks.token_classification.data import words_of

    by_name = {t.lower(): t for t in types}
    tags = ["O"] * len(words)
    parsed = answer.strip().lower().startswith("none")
    lowered = [w.lower() for w in words]
    for line in answer.splitlines():
        m = LINE.match(line)
        kind = by_name.get(m.group(1).lower()) if m else None
        if not kind:
            continue
        parsed = True
        wanted = [w.lower() for w in words_of(m.group(2))[0]] or [m.group(2).lower()]
        for start in range(len(words) - len(wanted) + 1):
            window = range(start, start + len(wanted))
            if lowered[start:start + len(wanted)] == wanted and all(tags[i] == "O" for i in window):
                tags[start] = f"B-{kind}"
                for i in list(window)[1:]:
                    tags[i] = f"I-{kind}"
                break
    return tags, parsed


@METHODS.register("ner_prompt")
class NerPrompt(TorchModelAccounting, Method):
    Params = NerPromptParams
    tasks = frozenset({"token_classification"})
    trains = False

    def setup(self) -> None:
        from adaptlab.generation import lm
        from adaptlab.models import resolve_model

        resolved = resolve_model(self.params.model, allow_pickle=self.ctx.allow_pickle) if self.params.model \
            else self.ctx.model
        config = lm.load_config(resolved, self.ctx.trust_remote_code)
        spec = self.params.model or self.ctx.model_spec
        self.kind = lm.require_generative(config, spec, self.name)
        self.tokenizer = lm.load_tokenizer(resolved.location, self.ctx.trust_remote_code)
        self.model = lm.load_model(resolved, self.kind, "auto", self.ctx.trust_remote_code).to(self.ctx.torch_device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.types = sorted({n[2:] for n in self.label_names if n != "O"})
        self.demos: list[tuple[str, str]] = []

    def computes_in_half(self) -> bool:
        """Its model as stored (bf16 for smollm2): loaded with dtype auto."""
        from adaptlab.generation import lm
        from adaptlab.models import resolve_model

        resolved = resolve_model(self.params.model, allow_pickle=self.ctx.allow_pickle) if self.params.model \
            else self.ctx.model
        return lm.in_half(resolved, "auto", self.ctx.trust_remote_code)

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        """Pick the demonstrations (seeded): training sentences that contain entities."""
        with_entities = [i for i, tags in enumerate(data.train.tags) if any(t != "O" for t in tags)]
        chosen = random.Random(self.ctx.seed).sample(with_entities, min(self.params.shots, len(with_entities)))
        self.demos = [(" ".join(data.train.tokens[i]), answer_of(data.train.tokens[i], data.train.tags[i]))
                      for i in chosen]
        return {"history": [], "samples": 0}

    def instruction(self) -> str:
        described = self.ctx.settings.entity_descriptions or {}
        kinds = "; ".join(f"{t} ({described[t]})" if t in described else t for t in self.types)
        return ("List the named entities in the text. Entity types: " + kinds + ". Answer with one entity per line "
                "as `type: words`, copying the words from the text, or `none` if there is no entity.")

    def prompt_ids(self, text: str) -> list[int]:
        turns = [{"role": "system", "content": self.instruction()}]
        for demo_text, answer in self.demos:
            turns += [{"role": "user", "content": demo_text}, {"role": "assistant", "content": answer}]
        turns.append({"role": "user", "content": text})
        if getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        plain = "\n\n".join(f"{t['role']}: {t['content']}" for t in turns) + "\n\nassistant:"
        return self.tokenizer(plain, add_special_tokens=True)["input_ids"]

    def predict_tags(self, sentences: list[list[str]]) -> Any:
        from adaptlab.generation.decoding import finish_text, generate_ids
        from adaptlab.tasks._settings import GenerationSpec
        from adaptlab.tasks.token_classification.output import TagOutput

        settings = GenerationSpec(max_new_tokens=self.params.max_new_tokens, batch_size=self.params.batch_size,
                                  stop=["\n\n"])
        prompts = [self.prompt_ids(" ".join(words)) for words in sentences]
        ids = generate_ids(self.model, self.tokenizer, self.kind, prompts, settings, seed=self.ctx.seed,
                           device=self.ctx.torch_device)
        results = [parse_answer(finish_text(self.tokenizer, row, settings.stop), words, self.types)
                   for row, words in zip(ids, sentences)]
        return TagOutput([tags for tags, _ in results], unparsed=[not ok for _, ok in results])

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        record = {"model": self.params.model or self.ctx.model_spec, "instruction": self.instruction(),
                  "demos": self.demos}
        (path / PROMPT_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup()
        method.demos = [tuple(d) for d in json.loads((path / PROMPT_FILE).read_text(encoding="utf-8"))["demos"]]
        return method
