"""Node catalogue (Qt-free declarations) and the graph -> JobSpec compiler.

- `CATALOGUE`: one `NodeDecl` per node kind (ports and parameters generated from `engine.spec`);
- `compile(graph, graph_path)`: a serialized graph dict -> `CompileResult` (specs + errors, each
  `CompileError` with a `kind` from `ERROR_KINDS`);
- `load_graph` / `save_graph` / `GraphBuilder`: graph files (NodeGraphQt session JSON).
"""

from nodes.catalogue import (
    CATALOGUE,
    FINE_TUNE,
    KINDS,
    NODE_TYPES,
    TYPE_PREFIX,
    InputPort,
    NodeDecl,
    OutputPort,
    Parameter,
    PortRef,
    decl_for_type,
)
from nodes.compiler import compile
from nodes.graphfile import (
    GRAPH_FORMAT_VERSION,
    GraphBuilder,
    GraphFileError,
    load_graph,
    migrate_graph,
    new_uuid,
    save_graph,
)
from nodes.results import (
    ERROR_KINDS,
    CompileError,
    CompileResult,
    ErrorKind,
    ModuleResult,
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
    "ERROR_KINDS",
    "CompileError",
    "CompileResult",
    "ErrorKind",
    "ModuleResult",
    "compile",
    "GRAPH_FORMAT_VERSION",
    "GraphBuilder",
    "GraphFileError",
    "load_graph",
    "migrate_graph",
    "new_uuid",
    "save_graph",
]
