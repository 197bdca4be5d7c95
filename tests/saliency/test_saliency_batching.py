"""A sample's maps do not depend on its batch-mates (issue 15, bug 5).

Batched, a sample is left-padded to the longest sequence of the batch; every method must give
the map it gives alone. GLIMPSE's head score divided by the sum of ReLU(dz/dA) over ALL keys,
padding keys included (A is 0 there, dz/dA is not), so its maps moved with the padding.
"""

from __future__ import annotations

import numpy as np
import pytest
from saliency_helpers import FAMILIES

from lookright.saliency import available_methods, explain_batch

QUESTIONS = ["What color is the circle?", "Is there a star?", "Where is the square?"]
COMPLETIONS = [
    "<think>The circle is at the top left. It is red.</think>red",
    "<think>No.</think>no",
    "<think>The square is at the bottom.</think>bottom left",
]
# seeded per position in the batch, by design (see RandomMap)
BATCH_DEPENDENT = {"random"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_gives_the_same_map_batched_and_alone(family, build_tiny, noise_images):
    model, processor, adapter = build_tiny(family)
    model = model.double()
    methods = [m for m in available_methods() if m not in BATCH_DEPENDENT]
    images = noise_images[:3]
    batched = explain_batch(model, processor, images, QUESTIONS, COMPLETIONS, methods, adapter)
    for k in range(len(images)):
        alone = explain_batch(
            model, processor, [images[k]], [QUESTIONS[k]], [COMPLETIONS[k]], methods, adapter
        )
        for method in methods:
            together, single = batched[method][k], alone[method][0]
            assert (together.response_map is None) == (single.response_map is None), method
            if single.response_map is not None:
                np.testing.assert_allclose(
                    together.response_map,
                    single.response_map,
                    rtol=1e-5,
                    atol=1e-7 * float(np.abs(single.response_map).max()),
                    err_msg=f"{method}, sample {k}",
                )
