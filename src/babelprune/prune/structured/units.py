"""Old import path of the structure layouts, which now live in `babelprune.models.layouts`.

The layouts (which heads and FFN neurons a block has, what each costs, their
physical removal, the widths recorded in the config) need only the adapter
table, so they sit on the models floor where `evaluate` and `formats` may
read them without importing the pruning engine. Code written against
`babelprune.prune.structured.units` keeps working through these names.
"""

from babelprune.models.layouts import (
    STRUCTURE_KEY,
    GqaMode,
    HeadUnit,
    LayerLayout,
    UnitMap,
    block_params,
    check_head_keep,
    check_head_removal,
    config_matches_weights,
    ffn_rows,
    head_unit_map,
    layer_layout,
    layer_layouts,
    linear_index_costs,
    linear_params,
    model_params,
    neuron_unit_map,
    record_structure,
    reduce_to_units,
    remove_blocks,
    remove_heads,
    remove_neurons,
    select_head_norms,
    select_neurons,
    shrink_linear,
    structure_of,
    total_block_params,
    unit_costs,
)

__all__ = [
    "STRUCTURE_KEY",
    "GqaMode",
    "HeadUnit",
    "LayerLayout",
    "UnitMap",
    "block_params",
    "check_head_keep",
    "check_head_removal",
    "config_matches_weights",
    "ffn_rows",
    "head_unit_map",
    "layer_layout",
    "layer_layouts",
    "linear_index_costs",
    "linear_params",
    "model_params",
    "neuron_unit_map",
    "record_structure",
    "reduce_to_units",
    "remove_blocks",
    "remove_heads",
    "remove_neurons",
    "select_head_norms",
    "select_neurons",
    "shrink_linear",
    "structure_of",
    "total_block_params",
    "unit_costs",
]
