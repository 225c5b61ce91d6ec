"""A Fine-Tune module's JobSpec, assembled from the nodes feeding its ports, and the way back from
a field of that spec (as a SpecError names it) to the node and parameter the user must fix."""

from __future__ import annotations

import copy
from typing import Any

from engine.spec import DatasetSpec, EvalSpec, ExportSpec, JobSpec, MethodSpec, RewardSpec
from nodes.catalogue import CATALOGUE, FINE_TUNE
from nodes.structure import GraphNode

# The enabled nodes picked on each input port of a Fine-Tune node: {"dataset": [node, …], …}
Picked = dict[str, list[GraphNode]]

# The JobSpec part each Fine-Tune input fills: {"base_model": "base_model", "datasets": "dataset", …}
PORT_OF_PART = {CATALOGUE[p.accepts[0].kind].spec_part: p.name for p in FINE_TUNE.inputs}


def assemble_spec(
    node: GraphNode,
    picked: Picked,
    graph_path: str,
    upstream: JobSpec | None = None,
    datasets: list[DatasetSpec] | None = None,
    evals: list[EvalSpec] | None = None,
) -> JobSpec:
    """The JobSpec of Fine-Tune `node` built from the nodes `picked` on its ports (not validated);
    `upstream` is the spec of the Fine-Tune node feeding its base_model port, for a chained run
    (its base model is copied, and the node named: the submission turns it into `run:<id>`);
    `datasets` replaces the Dataset nodes' (a data node's output file: nodes.recipes), `evals`
    the Eval nodes' own (with the rows on their Eval set input: nodes.eval_sets)."""

    def part(port: str) -> Any:
        """The spec part of the one node on `port`."""
        feeder = picked[port][0]
        return feeder.decl.spec_class(**feeder.values)

    return JobSpec(
        name=node.name,
        base_model=copy.deepcopy(upstream.base_model) if upstream else part("base_model"),
        upstream_node=upstream.node_uuid if upstream else "",
        datasets=datasets
        if datasets is not None
        else [DatasetSpec(**n.values) for n in picked["dataset"]],
        training=part("training_config"),
        lora=part("lora_config"),
        resources=FINE_TUNE.spec_class(**FINE_TUNE.part_values(node.values, FINE_TUNE.spec_class)),
        method=MethodSpec(**FINE_TUNE.part_values(node.values, MethodSpec)),
        export=part("export") if "export" in picked else ExportSpec(),
        evals=evals
        if evals is not None
        else [EvalSpec(**n.values) for n in picked.get("eval", [])],
        rewards=[RewardSpec(**n.values) for n in picked.get("reward", [])],
        sweep=part("sweep") if "sweep" in picked else None,
        node_uuid=node.uuid,
        origin_uuid=node.origin_uuid,
        graph_path=graph_path,
    )


def owner_of(spec_field: str, node: GraphNode, picked: Picked) -> tuple[GraphNode, str]:
    """Map a SpecError field (e.g. `datasets[1].path`) back to the node that owns it."""
    head, _, rest = spec_field.partition(".")
    part, _, index = head.partition("[")
    port = PORT_OF_PART.get(part)
    if port is None or port not in picked:
        return node, rest or (PORT_OF_PART.get(part) or head)
    if not rest:
        return node, port
    feeders = picked[port]
    i = int(index.rstrip("]")) if index else 0
    return (feeders[i] if i < len(feeders) else node), rest
