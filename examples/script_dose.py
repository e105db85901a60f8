"""Scripting the TG-43 engine: point doses, a dose grid, and a seed model's provenance.

Run: python examples/script_dose.py
"""

import numpy as np

import seedplan

# Three 0.5 mCi model-6711 seeds on one needle along +z, 10 mm apart.
seeds_mm = np.array([[0.0, 0.0, -10.0], [0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
strength_U = seedplan.mCi_to_U(np.full(3, 0.5))  # 1.270 U per mCi for I-125

points_mm = np.array([[10.0, 0.0, 0.0], [0.0, 15.0, 5.0], [20.0, 20.0, 0.0]])
print("initial dose rate (cGy/h):", seedplan.dose_rate(points_mm, seeds_mm, strength_U).round(4))
print("permanent-implant dose (Gy):", seedplan.total_dose(points_mm, seeds_mm, strength_U).round(2))
print("1D point-source formalism (Gy):", seedplan.total_dose(points_mm, seeds_mm, strength_U, formalism="1D-point").round(2))

# A 1 mm grid around the needle; arrays are indexed [z, y, x].
grid = seedplan.Grid(origin_mm=[-30, -30, -40], spacing_mm=[1, 1, 1], size=[61, 61, 81])
dose_Gy = seedplan.total_dose_grid(grid, seeds_mm, strength_U)
print(f"grid {grid.shape}: {100 * (dose_Gy >= 120).mean():.2f} % of voxels receive >= 120 Gy")

model = seedplan.load_seed_model("6711")
print(model.summary())
print("citation:", model.citation)
