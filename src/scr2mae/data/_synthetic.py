"""A synthetic multi-donor single-cell dataset with donor-level traits (no download needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._validation import check_int

__all__ = ["synthetic_donor_counts"]


def synthetic_donor_counts(
    n_donors: int = 24,
    cells_per_donor: int = 60,
    n_genes: int = 400,
    n_cell_types: int = 5,
    age_effect: float = 0.6,
    disease_effect: float = 0.8,
    donor_effect: float = 0.3,
    dispersion: float = 5.0,
    mean_library_size: float = 2000.0,
    seed: int = 0,
) -> AnnData:
    """Negative-binomial counts from several donors with a continuous age and a disease label.

    The generative model, per cell ``i`` of donor ``d`` and cell type ``t``:

    * donors: age ``a_d ~ U(20, 80)`` years; disease status ``y_d`` (half the donors, chosen at
      random, are ``"disease"``, the others ``"normal"``); a donor effect ``b_d ~ N(0,
      donor_effect²)`` per gene (batch effect);
    * cell types: drawn uniformly per cell; each has a log-expression profile
      ``μ_t = μ_0 + N(0, 1)`` on 10% of genes (markers), over a shared baseline
      ``μ_0 ~ N(0, 1)``;
    * age: a program ``g_age ~ N(0, 1)`` on 10% of genes, scaled by the standardised age
      ``(a_d - 50) / 17`` and ``age_effect``, plus a cell-level jitter of the age (sd 5 years)
      so that the cell-level signal is noisier than the donor-level one;
    * disease: a program ``g_dis ~ N(0, 1)`` on 10% of genes, added with strength
      ``disease_effect`` in disease donors, only in the first half of the cell types (the
      "affected" types, like Alzheimer-specific subtypes);
    * expression: ``softmax(μ_t + age + disease + b_d)`` times a log-normal library size of
      mean ``mean_library_size``; counts ``~ NB(mean, dispersion)`` drawn as gamma-Poisson.

    Parameters
    ----------
    n_donors
        Number of donors (at least 4).
    cells_per_donor
        Cells per donor.
    n_genes
        Number of genes (at least 20).
    n_cell_types
        Number of cell types (at least 2).
    age_effect, disease_effect, donor_effect
        Strengths of the age program, the disease program and the donor batch effect.
    dispersion
        Inverse dispersion of the negative binomial.
    mean_library_size
        Mean total count per cell.
    seed
        Seed of the generator.

    Returns
    -------
    AnnData with integer counts in ``.layers["counts"]`` (CSR) and ``.X``, and ``obs``
    columns ``donor_id``, ``cell_type``, ``disease`` (``"normal"``/``"disease"``),
    ``age_years`` (the donor's age) and ``development_stage`` (Census-style label).
    """
    check_int("n_donors", n_donors, 4)
    check_int("cells_per_donor", cells_per_donor)
    check_int("n_genes", n_genes, 20)
    check_int("n_cell_types", n_cell_types, 2)
    for name, value in (
        ("age_effect", age_effect),
        ("disease_effect", disease_effect),
        ("donor_effect", donor_effect),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    if not dispersion > 0:
        raise ValueError(f"`dispersion` must be positive, got {dispersion!r}.")
    if not mean_library_size > 0:
        raise ValueError(f"`mean_library_size` must be positive, got {mean_library_size!r}.")

    rng = np.random.default_rng(seed)
    n_cells = n_donors * cells_per_donor
    n_prog = max(2, n_genes // 10)

    def program() -> np.ndarray:
        g = np.zeros(n_genes)
        g[rng.choice(n_genes, n_prog, replace=False)] = rng.normal(0.0, 1.0, n_prog)
        return g

    baseline = rng.normal(0.0, 1.0, n_genes)
    type_profiles = np.stack([baseline + program() for _ in range(n_cell_types)])
    age_program = program()
    disease_program = program()

    ages = rng.uniform(20.0, 80.0, n_donors).round()
    diseased = np.zeros(n_donors, dtype=bool)
    diseased[rng.choice(n_donors, n_donors // 2, replace=False)] = True
    donor_shift = rng.normal(0.0, donor_effect, (n_donors, n_genes))

    donor = np.repeat(np.arange(n_donors), cells_per_donor)
    cell_type = rng.integers(0, n_cell_types, n_cells)
    affected = cell_type < max(1, n_cell_types // 2)
    cell_age = ages[donor] + rng.normal(0.0, 5.0, n_cells)
    logits = (
        type_profiles[cell_type]
        + age_effect * ((cell_age - 50.0) / 17.0)[:, None] * age_program
        + disease_effect * (diseased[donor] & affected)[:, None] * disease_program
        + donor_shift[donor]
    )
    logits -= logits.max(1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(1, keepdims=True)
    library = rng.lognormal(np.log(mean_library_size) - 0.125, 0.5, n_cells)
    mean = probs * library[:, None]
    counts = rng.poisson(rng.gamma(dispersion, mean / dispersion))
    empty = counts.sum(1) == 0
    counts[empty, rng.integers(0, n_genes, empty.sum())] = 1

    donor_ids = np.array([f"donor_{d:02d}" for d in range(n_donors)])
    obs = pd.DataFrame(
        {
            "donor_id": pd.Categorical(donor_ids[donor]),
            "cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
            "disease": pd.Categorical(
                np.where(diseased[donor], "disease", "normal"), categories=["normal", "disease"]
            ),
            "age_years": ages[donor],
            "development_stage": pd.Categorical([f"{int(a)}-year-old stage" for a in ages[donor]]),
        },
        index=[f"cell_{i:05d}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{j:04d}" for j in range(n_genes)])
    X = sparse.csr_matrix(counts.astype(np.int32))
    adata = AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    return adata
