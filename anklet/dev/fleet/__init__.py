"""The fleet simulator: many simulated Macs and the real controller in a few processes.

- `anka_model`: an in-process Anka (`host_agent.anka.AnkaDriver`) with a 2-VM limit that
  records when each VM saw its first command;
- `hosts`: many production `Agent`s over those models, sharing one Redis pool per process;
- `kube_standin`: the Kubernetes side (watch + `KubeClient`) in memory;
- `control_plane`: the real `Reconciler` and `ControllerProtocol` over the stand-in;
- `procs`: the controller and the hosts in their own processes, driven over pipes;
- `bench`: one benchmark row and the table (`make bench`, `scripts/bench_fleet.py`).

Everything runs against one real `redis-server` on loopback.
"""
