"""Which block linears ran with sparse kernels (`--sparse-kernels 2:4`), which stayed dense and why (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Linears named per reason in a summary sentence; the record itself keeps every name.
_NAMED = 3


class SparseKernelRecord(BaseModel):
    """The outcome of converting a model's block linears to semi-structured weights.

    `converted` + the lengths of `left_dense`'s lists = `total`, the model's block linears.
    Names are the keys pruning records use: "<block>.<linear>" ("3.down").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernels: str  # "2:4"
    backend: str | None = None  # torch's semi-structured class that ran them: "cusparselt" or "cutlass"
    total: int  # block linears in the model
    converted: int  # of them, run as semi-structured weights
    left_dense: dict[str, list[str]] = Field(default_factory=dict)  # why -> the linears that stayed dense for it

    @property
    def n_dense(self) -> int:
        return sum(len(names) for names in self.left_dense.values())

    @property
    def complete(self) -> bool:
        """Every block linear ran with the sparse kernels."""
        return self.total > 0 and self.converted == self.total

    def dense_reasons(self) -> str:
        """'4 not 2:4 along the input (0.q, 0.k, 1.q, ...); 2 float32 weights (...)'."""
        parts = []
        for why, names in self.left_dense.items():
            shown = ", ".join(names[:_NAMED]) + (", ..." if len(names) > _NAMED else "")
            parts.append(f"{len(names)} {why} ({shown})")
        return "; ".join(parts)

    def summary(self, spec: str | None = None) -> str:
        """One sentence: how many block linears ran as 2:4 semi-structured weights, and why the others did not."""
        of = f" of {spec}" if spec else ""
        backend = f" ({self.backend})" if self.backend else ""
        if self.total == 0:
            return f"--sparse-kernels {self.kernels}: the model{of} has no block linears, so it ran dense."
        if self.converted == 0:
            return (f"--sparse-kernels {self.kernels}: none of the {self.total} block linears{of} could be converted, "
                    f"so it ran dense: {self.dense_reasons()}.")
        if self.complete:
            return f"--sparse-kernels {self.kernels}: all {self.total} block linears{of} ran as semi-structured weights{backend}."
        return (f"--sparse-kernels {self.kernels}: {self.converted} of {self.total} block linears{of} ran as semi-structured "
                f"weights{backend}; {self.n_dense} stayed dense: {self.dense_reasons()}.")
