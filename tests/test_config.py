import pytest

from recsys.config import Settings, load_settings, to_toml
from recsys.types import ConfigError


def test_defaults_without_file_or_env():
    assert load_settings(env={}) == Settings()


def test_toml_then_env_override(tmp_path):
    path = tmp_path / "recsys.toml"
    path.write_text('[related]\nmmr_lambda = 0.5\nmax_age_days = 30\n[embedder]\nmodel = "models/x"\n')
    settings = load_settings(path, env={"RECSYS_RELATED__MMR_LAMBDA": "0.9", "OTHER": "1"})
    assert settings.related.mmr_lambda == 0.9  # env wins over the file
    assert settings.related.max_age_days == 30.0
    assert settings.embedder.model == "models/x"
    assert settings.index == Settings().index


def test_config_file_from_environment_variable(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[index]\nexact_max = 10\n")
    assert load_settings(env={"RECSYS_CONFIG": str(path)}).index.exact_max == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[related]\nmmr_lamda = 0.5\n", "unknown setting \\[related\\] mmr_lamda"),
        ("[relate]\nk = 1\n", "unknown section"),
        ('[related]\nk = "ten"\n', "not a valid int"),
        ("[related\nk = 1\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


def test_bad_env_value():
    with pytest.raises(ConfigError, match=r"half_life_days = 'soon' is not a valid float"):
        load_settings(env={"RECSYS_RELATED__HALF_LIFE_DAYS": "soon"})


def test_toml_rendering_round_trips(tmp_path):
    changed = Settings().replace("related", max_age_days=7, mmr_lambda=0.6)
    path = tmp_path / "out.toml"
    path.write_text(to_toml(changed))
    assert load_settings(path, env={}) == changed
    assert "# max_age_days" in to_toml(Settings())
