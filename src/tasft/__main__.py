from .training.launch import prepare

prepare()  # multi-process CPU launches (accelerate --cpu, torchrun without CUDA): see tasft.launch

from .cli import main  # noqa: E402

raise SystemExit(main())
