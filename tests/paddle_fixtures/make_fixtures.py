"""Write the Paddle checkpoint fixtures with real Paddle (not a CI dependency).

Run in a side environment:

    python -m venv /tmp/paddle && /tmp/paddle/bin/pip install paddlepaddle==2.6.2 "numpy<2"
    /tmp/paddle/bin/python tests/paddle_fixtures/make_fixtures.py

Paddle no longer has ``inplace_abn``; the seed network is built with ``batch_norm``
(is_test) plus ``leaky_relu`` under the parameter names ``fluid.layers.inplace_abn``
gives (``inplace_abn_0.w_0`` scale, ``.b_0`` bias, ``.w_1`` moving mean, ``.w_2``
moving variance), which is what InplaceABN computes in inference. The parameters get
seeded random values (negative scales, non-trivial statistics), and the script writes:

* ``seed.pdparams``            ``paddle.static.save`` (a pickle of name -> ndarray)
* ``seed_vars/<name>``         ``paddle.static.io.save_vars``: one LoDTensor file per variable
* ``seed.pdiparams``           ``paddle.static.save_inference_model``: the persistables, combined
* ``seed_io.npz``              the input ``x`` and Paddle's inference output ``y``
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    paddle.enable_static()
    main_program, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main_program, startup):
        x = paddle.static.data(name="x", shape=[3, 7, 3, 7], dtype="float32")
        hidden1 = paddle.static.nn.fc(x, size=200, weight_attr="fc1.w")
        layers = []
        for i in range(2):
            layers.append(
                dict(
                    param_attr=paddle.ParamAttr(name=f"inplace_abn_{i}.w_0"),
                    bias_attr=paddle.ParamAttr(name=f"inplace_abn_{i}.b_0"),
                    moving_mean_name=f"inplace_abn_{i}.w_1",
                    moving_variance_name=f"inplace_abn_{i}.w_2",
                )
            )
        hidden2 = paddle.static.nn.batch_norm(hidden1, is_test=True, epsilon=1e-5, **layers[0])
        hidden3 = paddle.static.nn.batch_norm(hidden2, is_test=True, epsilon=1e-5, **layers[1])
        hidden3 = paddle.nn.functional.leaky_relu(hidden3, negative_slope=0.2)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup)
    scope = paddle.static.global_scope()
    rng = np.random.default_rng(20181)
    params = sorted(p.name for p in main_program.all_parameters())
    for name in params:
        tensor = scope.find_var(name).get_tensor()
        shape = tuple(np.array(tensor).shape)
        if name.endswith(".w_2"):  # moving variance
            value = rng.uniform(0.25, 2.0, shape)
        elif name.endswith(".w_0") and name.startswith("inplace_abn"):  # scale, some negative
            value = rng.normal(0.0, 1.0, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        tensor.set(value.astype(np.float32), place)
    x_value = rng.standard_normal((3, 7, 3, 7)).astype(np.float32)
    (y_value,) = exe.run(main_program, feed={"x": x_value}, fetch_list=[hidden3])
    np.savez(os.path.join(HERE, "seed_io.npz"), x=x_value, y=y_value)

    with tempfile.TemporaryDirectory() as tmp:
        paddle.static.save(main_program, os.path.join(tmp, "seed"))
        shutil.copy(os.path.join(tmp, "seed.pdparams"), os.path.join(HERE, "seed.pdparams"))
        paddle.static.save_inference_model(os.path.join(tmp, "inference"), [x], [hidden3], exe, program=main_program)
        shutil.copy(os.path.join(tmp, "inference.pdiparams"), os.path.join(HERE, "seed.pdiparams"))
    vars_dir = os.path.join(HERE, "seed_vars")
    shutil.rmtree(vars_dir, ignore_errors=True)
    paddle.static.io.save_vars(exe, vars_dir, main_program, vars=[main_program.global_block().var(n) for n in params])
    print("parameters:", params)
    print("wrote", sorted(os.listdir(HERE)), "and", sorted(os.listdir(vars_dir)))


if __name__ == "__main__":
    main()
