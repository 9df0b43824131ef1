"""tools/analysis_tools/cpu_benchmarks.sh: the script behind docs/benchmarks.md parses, names
its steps, and every tool and config it calls exists."""
import re
import subprocess

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / 'tools' / 'analysis_tools' / 'cpu_benchmarks.sh'


def test_unknown_step_is_refused_in_one_line(tmp_path):
    result = subprocess.run(['bash', str(SCRIPT), str(tmp_path / 'out'), 'no-such-step'],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert "unknown step 'no-such-step'" in result.stderr


def test_every_tool_and_config_it_calls_exists():
    text = SCRIPT.read_text()
    tools = re.findall(r'\$BENCH/(\w+\.py)', text)
    configs = re.findall(r'=(configs/\S+\.py)', text)
    assert len(set(tools)) == 5 and len(configs) == 2
    for name in tools:
        assert (REPO_ROOT / 'tools' / 'analysis_tools' / name).is_file(), name
    for path in configs:
        assert (REPO_ROOT / path).is_file(), path


def test_docs_name_the_script():
    assert 'cpu_benchmarks.sh' in (REPO_ROOT / 'docs' / 'benchmarks.md').read_text()
