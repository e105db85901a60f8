"""Seed models: TG-43 consensus datasets shipped as package data, with provenance."""

from ._model import (
    NORMALISATION_TOL,
    SeedModel,
    U_to_mCi,
    available_seed_models,
    derive_phi_an,
    load_seed_model,
    mCi_to_U,
    read_seed_model_file,
    seed_model_from_dict,
)

__all__ = [
    "SeedModel",
    "load_seed_model",
    "read_seed_model_file",
    "seed_model_from_dict",
    "available_seed_models",
    "mCi_to_U",
    "U_to_mCi",
    "derive_phi_an",
    "NORMALISATION_TOL",
]
