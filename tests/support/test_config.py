import pytest

from support.harness.config import SuiteSetupError, load


def test_defaults_are_the_embedded_stack():
    config = load({}, environ={})
    assert config.stack == "local"
    assert config.ready_timeout == 30.0
    assert config.run_id


def test_userdata_wins_over_environment_which_wins_over_defaults():
    environ = {"SUITE_REQUEST_TIMEOUT": "7", "SUITE_POLL_TIMEOUT": "3"}
    config = load({"request_timeout": "9"}, environ=environ)
    assert config.request_timeout == 9.0
    assert config.poll_timeout == 3.0


@pytest.mark.parametrize("userdata, says", [
    ({"stack": "kubernetes"}, "is not a stack"),
    ({"stak": "local"}, "unknown option -D stak"),
    ({"ready_timeout": "soon"}, "is not a number"),
    ({"ready_timeout": "-1"}, "must be above zero"),
    ({"keep_stack": "maybe"}, "is not a boolean"),
    ({"stack": "external"}, "add -D base_url"),
    ({"keys_dir": "/nonexistent/keys"}, "scripts/keygen"),
])
def test_bad_options_stop_with_one_line_that_says_what_to_do(userdata, says):
    with pytest.raises(SuiteSetupError) as problem:
        load(userdata, environ={})
    assert says in str(problem.value)
    assert "\n" not in str(problem.value)


def test_formatter_options_pass_through():
    assert load({"AllureFormatter.issue_pattern": "x"}, environ={}).stack == "local"


def test_the_printed_configuration_masks_database_passwords():
    config = load({"database_url": "postgresql://app:hunter22@db:5432/x"}, environ={})
    assert "hunter22" not in config.describe()
    assert "app:«masked»@db" in config.describe()


def test_the_first_line_says_which_stack_what_it_offers_and_where_the_report_goes():
    local = load({"run_id": "r1"}, environ={}).describe("allure-results")
    assert local.startswith("acceptance suite: local stack (gateway and model stub started here, database SQLite")
    assert "run r1;" in local and "report: allure-results" in local and "None" not in local
    external = load({"stack": "external", "base_url": "https://gw.example.test", "stub_url": "http://stub:9"},
                    environ={}).describe()
    assert "external stack at https://gw.example.test (no database, stub control, no config repo, no logs)" in external
    assert "\n" not in local + external


def test_every_option_is_listed_with_its_default_and_meaning():
    from dataclasses import fields

    from support.harness.config import SuiteConfig, options_help
    listed = options_help()
    for f in fields(SuiteConfig):
        assert f"\n  {f.name}" in listed, f.name
        assert f.metadata["meaning"].split()[0] in listed, f.name
    assert "stack  (default: local)" in listed and "cleanup  (default: true)" in listed
