"""Pure ``@njit`` kernels grouped by family. No pyarrow here."""
