"""The environment throughput benchmark runs end to end in its quick mode and writes its JSON (bad flags and
Ctrl-C: test_bad_input.py)."""

import json

from benchmarks import env_throughput


def test_env_throughput_quick_mode_writes_every_figure(tmp_path, capsys):
    results = env_throughput.main(["--quick", "--json", str(tmp_path / "env.json")])
    written = json.loads((tmp_path / "env.json").read_text())
    assert written == json.loads(json.dumps(results)) and written["interrupted"] is False
    assert written["single"]["painter_steps_per_second"] > 0 and written["single"]["cartpole_steps_per_second"] > 0
    assert written["vector_16"]["native_env_steps_per_second"] > 0
    assert set(written["image_size"]) == {"num_envs", "painting_step", "step_incl_autoreset"}
    table = capsys.readouterr().out
    assert "| native batched N=16 |" in table and "SyncVectorEnv N=16" in table
    assert written["single"]["torch_op_seconds"] > 0 and written["single"]["cartpole_step_in_torch_ops"] > 0
    assert "| one torch.add of tiny tensors |" in table
