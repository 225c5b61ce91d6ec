"""The node catalogue: one Qt-free declaration per node kind.

Every parameter is generated from the field metadata of the matching `engine.spec` dataclass
(help, min, max, choices, label, short label, widget), so a knob is declared once. The app turns
these declarations into NodeGraphQt classes and property panels; the compiler reads them to check
and coerce the values stored in a graph file.
"""

from __future__ import annotations

from engine.spec import (
    BaseModelSpec,
    DatasetSpec,
    EvalSpec,
    ExportSpec,
    LoraSpec,
    MethodSpec,
    ResourceSpec,
    RewardSpec,
    TrainingSpec,
)
from engine.sweep_spec import SweepSpec
from nodes.data_nodes import DATA_NODES, DATA_SOURCES
from nodes.declarations import (
    TYPE_PREFIX,
    InputPort,
    NodeDecl,
    OutputPort,
    Parameter,
    PortRef,
    parameters_of,
)

__all__ = [
    "CATALOGUE",
    "FINE_TUNE",
    "KINDS",
    "NODE_TYPES",
    "TYPE_PREFIX",
    "InputPort",
    "NodeDecl",
    "OutputPort",
    "Parameter",
    "PortRef",
    "decl_for_type",
    "parameters_of",
]


def _feeder(
    kind: str,
    label: str,
    help: str,
    colour: tuple[int, int, int],
    output: str,
    output_label: str,
    spec_class: type,
    spec_part: str,
    inputs: tuple[InputPort, ...] = (),
) -> NodeDecl:
    return NodeDecl(
        kind=kind,
        label=label,
        help=help,
        colour=colour,
        inputs=inputs,
        outputs=(OutputPort(output, output_label),),
        parameters=parameters_of(spec_class),
        spec_class=spec_class,
        spec_part=spec_part,
    )


_FEEDERS = (
    _feeder(
        "BaseModel",
        "Base model",
        "The open LLM to fine-tune, and the chat template its runs train with.",
        (52, 86, 139),
        "model",
        "model",
        BaseModelSpec,
        "base_model",
    ),
    _feeder(
        "Dataset",
        "Dataset",
        "A file of training examples; connect several to mix them.",
        (46, 125, 95),
        "dataset",
        "dataset",
        DatasetSpec,
        "datasets",
    ),
    _feeder(
        "TrainingConfig",
        "Training config",
        "How long and how fast to train: epochs, batch size, learning rate, checkpoints.",
        (140, 98, 38),
        "training_config",
        "training config",
        TrainingSpec,
        "training",
    ),
    _feeder(
        "LoraConfig",
        "LoRA config",
        "The adapter: rank, scaling, target modules (auto: this model's attention query and "
        "value projections, whatever its architecture calls them) and 4-bit quantization; or "
        "full fine-tuning (every weight trains, no adapter).",
        (112, 64, 140),
        "lora_config",
        "LoRA config",
        LoraSpec,
        "lora",
    ),
    _feeder(
        "Export",
        "Export",
        "What to deliver after training: adapter ZIP, GGUF bundle, merged model.",
        (130, 60, 70),
        "export",
        "export",
        ExportSpec,
        "export",
    ),
    _feeder(
        "Eval",
        "Eval",
        "An eval set the run scores itself on when training ends (its adapter, and the base "
        "or the GGUF when asked), with the metrics to compute: a file, the rows on its Eval set "
        "input (such as a Split's eval part) or the run's held-out split; connect several for "
        "several sets.",
        (40, 110, 130),
        "eval",
        "eval",
        EvalSpec,
        "evals",
        (
            InputPort(
                name="eval_set",
                label="Eval set",
                accepts=DATA_SOURCES,
                required=False,
                help="The rows to score: a Dataset node, or a data node's output such as a "
                "Split's eval part (made before the run starts, like its training data). Leave "
                "it empty to score the Eval set file, or else the run's held-out split.",
            ),
        ),
    ),
    _feeder(
        "Reward",
        "Reward",
        "A reward for GRPO: how each sampled answer is scored (a regex, the row's answer, valid "
        "JSON, a judge model's grade, a length target or your own Python scorer) and its weight; "
        "connect several.",
        (150, 120, 30),
        "reward",
        "reward",
        RewardSpec,
        "rewards",
    ),
    _feeder(
        "Sweep",
        "Sweep",
        "A search over the knobs of the Fine-Tune node it feeds: Optuna picks each trial's values "
        "(grid, random or TPE), the trials run as ordinary runs, losers are pruned at eval points, "
        "and the study ends with its best trial.",
        (70, 120, 70),
        "sweep",
        "sweep",
        SweepSpec,
        "sweep",
    ),
)
_BY_KIND = {d.kind: d for d in _FEEDERS}


def _input(name: str, kind: str, *, required: bool = True, multiple: bool = False) -> InputPort:
    feeder = _BY_KIND[kind]
    return InputPort(
        name=name,
        label=feeder.label,
        accepts=(PortRef(kind, feeder.outputs[0].name),),
        required=required,
        multiple=multiple,
        help=feeder.help,
    )


CHAIN_HELP = (
    "Or another Fine-Tune node's model output: this run then waits for that run to complete and "
    "starts from its result (its base with its adapter merged in), e.g. SFT, then DPO."
)

DATA_HELP = (
    "Or a data node's output (Generate, Filter, Deduplicate, Mix, Split): that data is built "
    "first, then the run trains on it."
)

FINE_TUNE = NodeDecl(
    kind="FineTune",
    label="Fine-Tune",
    help="One fine-tuning run, trained by its method (sft, pretrain, dpo, orpo, simpo, kto or "
    "grpo). Its name is the run's name; duplicate it to try a variation.",
    colour=(150, 40, 40),
    inputs=(
        InputPort(
            name="base_model",
            label=_BY_KIND["BaseModel"].label,
            accepts=(PortRef("BaseModel", "model"), PortRef("FineTune", "model")),
            help=_BY_KIND["BaseModel"].help + " " + CHAIN_HELP,
        ),
        InputPort(
            name="dataset",
            label=_BY_KIND["Dataset"].label,
            accepts=DATA_SOURCES,
            multiple=True,
            help=_BY_KIND["Dataset"].help + " " + DATA_HELP,
        ),
        _input("training_config", "TrainingConfig"),
        _input("lora_config", "LoraConfig"),
        _input("export", "Export", required=False),
        _input("eval", "Eval", required=False, multiple=True),
        _input("reward", "Reward", required=False, multiple=True),
        _input("sweep", "Sweep", required=False),
    ),
    outputs=(OutputPort("model", "Model"),),
    parameters=parameters_of(ResourceSpec) + parameters_of(MethodSpec),
    spec_class=ResourceSpec,
    spec_part="resources",
    extra_parts=((MethodSpec, "method"),),
)

CATALOGUE: dict[str, NodeDecl] = {
    FINE_TUNE.kind: FINE_TUNE,
    **_BY_KIND,
    **{d.kind: d for d in DATA_NODES},
}
"""Every node kind by name, Fine-Tune first, the data recipe nodes last."""

KINDS: tuple[str, ...] = tuple(CATALOGUE)
NODE_TYPES: tuple[str, ...] = tuple(d.type_ for d in CATALOGUE.values())


def decl_for_type(node_type: str) -> NodeDecl | None:
    """The declaration for a graph file's `type_` (e.g. `tunegraph.Dataset`), or None."""
    if not isinstance(node_type, str) or not node_type.startswith(TYPE_PREFIX):
        return None
    return CATALOGUE.get(node_type[len(TYPE_PREFIX) :])
