"""The data recipe nodes: Generate, Filter, Deduplicate, Mix and Split (issue 26).

Each makes a dataset from what flows into its `dataset` input (Generate from its own seeds and
documents, with a teacher model), and its output feeds a Fine-Tune node's `dataset` input or
another data node; Split has two outputs, `train` and `eval`. Their parameters are the fields of
engine.recipes.specs' parts, declared once there. The compiler turns the chain of data nodes
before a Fine-Tune node into the run's data steps (nodes.recipes).
"""

from __future__ import annotations

from engine.recipes.specs import DedupSpec, FilterSpec, GenerateSpec, MixSpec, SplitSpec
from nodes.declarations import InputPort, NodeDecl, OutputPort, PortRef, parameters_of

COLOUR = (40, 120, 110)
# every output that carries rows: a Dataset node's file, or a data node's result
DATA_SOURCES = (
    PortRef("Dataset", "dataset"),
    PortRef("Generate", "dataset"),
    PortRef("Filter", "dataset"),
    PortRef("Deduplicate", "dataset"),
    PortRef("Mix", "dataset"),
    PortRef("Split", "train"),
    PortRef("Split", "eval"),
)
DATASET_OUT = (OutputPort("dataset", "Dataset"),)


def rows_in(multiple: bool = False) -> tuple[InputPort, ...]:
    """A data node's `dataset` input: rows from a Dataset node or another data node."""
    return (
        InputPort(
            name="dataset",
            label="Dataset",
            accepts=DATA_SOURCES,
            multiple=multiple,
            help="The rows this node works on: a Dataset node or another data node's output.",
        ),
    )


def data_node(
    kind: str, help: str, spec_class: type, inputs: tuple, outputs: tuple = DATASET_OUT
) -> NodeDecl:
    """A data node's declaration: its parameters are `spec_class`'s fields."""
    return NodeDecl(
        kind=kind,
        label=kind,
        help=help,
        colour=COLOUR,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters_of(spec_class),
        spec_class=spec_class,
        spec_part=spec_class.part,
    )


DATA_NODES = (
    data_node(
        "Generate",
        "Synthetic rows from a local teacher model (GGUF): conversations, Q&A pairs or preference "
        "pairs written from seed prompts and/or passages of documents, with a prompt template of "
        "your own. Shows its progress; cancel and run again to go on where it stopped.",
        GenerateSpec,
        (),
    ),
    data_node(
        "Filter",
        "Drops rows by length, by regular expression, or by a scorer (a judge model's grade, "
        "ROUGE-L, JSON, your Python), and counts what each rule dropped.",
        FilterSpec,
        rows_in(),
    ),
    data_node(
        "Deduplicate",
        "Drops exact duplicates (text normalised) and near duplicates (MinHash LSH over word "
        "shingles, at a Jaccard threshold), and reports rows too close to another dataset such "
        "as the eval set (contamination).",
        DedupSpec,
        rows_in(),
    ),
    data_node(
        "Mix",
        "Several datasets in one, by ratios or row counts, shuffled by seed.",
        MixSpec,
        rows_in(multiple=True),
    ),
    data_node(
        "Split",
        "A train and an eval part, by fraction or row count, stratified by a column if given.",
        SplitSpec,
        rows_in(),
        (OutputPort("train", "Train"), OutputPort("eval", "Eval")),
    ),
)
