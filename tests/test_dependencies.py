"""The environment files stay true: every third-party module that remflow's package, its rule
scripts and the workflow's .smk files import is declared in pyproject.toml, and every one a
rule's script needs (with the remflow modules it imports, also inside functions) is declared in
that rule's conda environment (envs/*.yaml), with the same bounds as pyproject.toml.

Conda channels cannot be reached here, so this is what can be checked about the conda
environments: names and bounds, not that they solve."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import yaml

from conftest import REPO

SCRIPTS = REPO / "scripts"
PACKAGE = SCRIPTS / "remflow"
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "workflow" / "Snakefile"]
#: conda-forge names that differ from the PyPI distribution's.
CONDA_NAMES = {"matplotlib": {"matplotlib", "matplotlib-base"}, "tensorflow": {"tensorflow", "tensorflow[and-cuda]"}}
#: Imported only when installed, never declared (remflow.methods: BM3D's licence is non-commercial).
OPTIONAL = {"bm3d"}
#: Imported by the Snakefile process only, which runs in the environment Snakemake runs in.
SNAKEMAKE_PROCESS_ONLY = {"snakemake"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(text: str) -> tuple[str, str]:
    """(normalised name with extras, version specifier) of a PEP 508 or conda requirement."""
    match = re.match(r"\s*([A-Za-z0-9._-]+(?:\[[^\]]*\])?)\s*(.*)", text)
    assert match, text
    return _normal(match.group(1)), match.group(2).replace(" ", "")


def _bounds(spec: str) -> dict[str, str]:
    """{'>=': '2.5', '<': '3'} of a specifier string."""
    return dict(re.findall(r"(>=|<=|<|==|~=|>)([^,;\s]+)", spec))


def _top_imports(tree: ast.AST) -> set[str]:
    """Every module imported anywhere in the tree (also inside functions), absolute names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "remflow":
                names.update(f"remflow.{alias.name}" for alias in node.names)
    return names


def _smk_imports(path: Path) -> set[str]:
    """Imports of a .smk file: its plain Python import lines (Snakemake's own syntax is not Python)."""
    source = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines()
                       if re.match(r"(import|from)\s+\w", line))
    return _top_imports(ast.parse(source))


@cache
def _imports_of(path: Path) -> frozenset[str]:
    return frozenset(_top_imports(ast.parse(path.read_text(encoding="utf-8"))))


def _closure(path: Path) -> set[str]:
    """Third-party and stdlib top-level modules a file needs, following remflow's own modules."""
    seen, todo, needed = set(), [path], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imports_of(current):
            if name.split(".")[0] == "remflow":
                parts = name.split(".")[1:]
                module = PACKAGE.joinpath(*parts).with_suffix(".py") if parts else PACKAGE / "__init__.py"
                if not module.exists():
                    module = PACKAGE.joinpath(*parts) / "__init__.py"
                if module.exists():
                    todo.append(module)
            else:
                needed.add(name.split(".")[0])
    return needed


def _third_party(modules: set[str]) -> dict[str, str]:
    """{top-level module: normalised distribution} for the non-stdlib ones; unknown modules fail."""
    distributions = importlib.metadata.packages_distributions()
    found = {}
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module == "__future__" or module in OPTIONAL:
            continue
        assert module in distributions, f"'{module}' is imported but no installed distribution provides it"
        candidates = {_normal(d) for d in distributions[module]}
        assert len(candidates) == 1, (module, candidates)
        found[module] = candidates.pop()
    return found


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(_requirement(r) for r in data["project"]["dependencies"])


def _conda_env(name: str) -> dict[str, str]:
    """{normalised name: specifier} of a conda environment file's conda and pip entries."""
    env = yaml.safe_load((REPO / "envs" / name).read_text(encoding="utf-8"))
    entries = {}
    for item in env["dependencies"]:
        for text in item["pip"] if isinstance(item, dict) else [item]:
            name_, spec = _requirement(text)
            entries[name_] = spec
    return entries


def _rule_scripts() -> dict[str, tuple[str, Path]]:
    """{rule: (conda env file name, script path)} of every rule with a script."""
    rules = {}
    for path in RULES:
        text = path.read_text(encoding="utf-8")
        for block in re.split(r"^(?=(?:rule|checkpoint) \w+:)", text, flags=re.MULTILINE):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", block, flags=re.MULTILINE)
            conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", block, flags=re.MULTILINE)
            if head and script:
                assert conda, f"rule {head.group(1)} has a script but no conda environment"
                rules[head.group(1)] = (Path(conda.group(1)).name, (path.parent / script.group(1)).resolve())
    return rules


def test_rules_with_scripts_are_found():
    rules = _rule_scripts()
    # A broken parser would find none and check nothing.
    assert {"inspect_raw", "restore_batch", "fit_columns", "export"} <= set(rules)
    assert rules["restore_batch"][0] == "restore.yaml" and rules["fit_columns"][0] == "analysis.yaml"
    assert all(script.exists() for _, script in rules.values())


def test_every_imported_third_party_module_is_declared_in_pyproject_with_a_tested_lower_bound():
    modules = set()
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(SCRIPTS.glob("*.py")):
        modules |= _closure(path)
    for path in RULES:
        modules |= {name.split(".")[0] for name in _smk_imports(path) if not name.startswith("remflow")}
    declared = _pyproject()
    missing, untested = [], []
    for module, distribution in _third_party(modules).items():
        if distribution not in declared:
            missing.append(f"{module} ({distribution})")
            continue
        lower = _bounds(declared[distribution]).get(">=")
        installed = importlib.metadata.version(distribution)
        if lower is None or _version(installed) < _version(lower):
            untested.append(f"{distribution}: declared {declared[distribution] or 'without bound'}, installed {installed}")
    assert not missing, f"imported but not in pyproject.toml: {missing}"
    assert not untested, f"lower bound missing or above the tested version: {untested}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_every_rule_scripts_imports_are_in_its_conda_environment_with_pyprojects_bounds():
    declared = _pyproject()
    problems = []
    for rule, (env_name, script) in sorted(_rule_scripts().items()):
        env = _conda_env(env_name)
        for module, distribution in _third_party(_closure(script)).items():
            if distribution in SNAKEMAKE_PROCESS_ONLY:
                continue
            names = {_normal(n) for n in CONDA_NAMES.get(distribution, {distribution})}
            in_env = names & set(env)
            if not in_env:
                problems.append(f"rule {rule} ({script.name}) imports {module}: {distribution} missing in envs/{env_name}")
                continue
            env_bounds = _bounds(env[in_env.pop()])
            project_bounds = _bounds(declared.get(distribution, ""))
            if env_bounds != project_bounds:
                problems.append(f"envs/{env_name} {distribution} {env_bounds} != pyproject.toml {project_bounds}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_packages_in_both_a_conda_environment_and_pyproject_have_the_same_bounds():
    declared = _pyproject()
    conda_to_pypi = {_normal(c): p for p, names in CONDA_NAMES.items() for c in names}
    problems = []
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        for name, spec in _conda_env(env_file.name).items():
            distribution = conda_to_pypi.get(name, name)
            if distribution in declared and _bounds(spec) != _bounds(declared[distribution]):
                problems.append(f"envs/{env_file.name} {name} {spec or 'without bound'} != "
                                f"pyproject.toml {declared[distribution]}")
    assert not problems, "\n".join(problems)
