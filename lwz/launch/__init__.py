"""Starting runs (local, SLURM via submitit, sweeps) and rank/rendezvous from the environment."""

from lwz.launch.env import DistEnv, dist_env_from_environ, expand_nodelist, export_torch_env

__all__ = ["DistEnv", "dist_env_from_environ", "expand_nodelist", "export_torch_env"]
