"""The evaluation report (`eval/report.html`) read in a real headless browser: Debian's chromium driven
through its chromedriver by Selenium. `.ci/run` installs both where missing; elsewhere the browser test is
skipped, naming the packages (under CI=true it fails instead)."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
AGENTS = ("latent", "random", "oracle")
PLAY_SECONDS = """
const [video, done] = [arguments[0], arguments[arguments.length - 1]];
const played = () => { if (video.currentTime > 0.2) done(video.currentTime); };
video.addEventListener("timeupdate", played);
setTimeout(() => done(video.currentTime), 10000);
video.play().catch((error) => done(String(error)));
"""  # -> the seconds played (over 0.2 once it plays; at most 10 s of waiting), or why it cannot play


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium with a fresh profile, nothing fetched from the network, console messages kept."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def shown_rate(rate: float, interval: list[float]) -> str:
    return f"{rate:.1%} [{interval[0]:.1%}, {interval[1]:.1%}]"


def test_the_report_shows_the_metrics_and_plays_the_videos(micro_run_dir, browser):
    from selenium.webdriver.common.by import By

    report = micro_run_dir / "eval" / "report.html"
    assert json.loads((micro_run_dir / "summary.json").read_text())["report"] == str(report)
    html = report.read_text()
    for link in re.findall(r'(?:src|href)="([^"]*)"', html):  # self-contained: data, anchors, files beside it
        assert link.startswith(("data:", "#")) or (report.parent / link).is_file(), link
    browser.get(report.as_uri())
    videos = 0
    for agent in AGENTS:
        metrics = json.loads((micro_run_dir / "eval" / agent / "metrics.json").read_text())
        row = browser.find_element(By.CSS_SELECTOR, f'#success tr[data-agent="{agent}"]')

        def cell(metric: str) -> str:
            return row.find_element(By.CSS_SELECTOR, f'td[data-metric="{metric}"]').text

        assert cell("episodes") == str(metrics["episodes"])
        assert cell("success_rate") == shown_rate(metrics["success_rate"], metrics["success_rate_ci95"])
        assert cell("success_rate_held") == shown_rate(metrics["success_rate_held"], metrics["success_rate_held_ci95"])
        episodes = browser.find_elements(By.CSS_SELECTOR, f'table.episodes[data-agent="{agent}"] tbody tr')
        assert len(episodes) == metrics["episodes"]
        reached = [row.find_elements(By.TAG_NAME, "td")[3].text for row in episodes]
        assert reached.count("yes") == round(metrics["success_rate"] * metrics["episodes"])
        videos += len(list((micro_run_dir / "eval" / agent / "videos").glob("*.mp4")))
    elements = browser.find_elements(By.TAG_NAME, "video")
    assert videos > 0 and len(elements) == videos
    assert browser.execute_async_script(PLAY_SECONDS, elements[0]) > 0.2  # H.264 decoded: time advances
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_a_moved_video_is_a_console_error_and_does_not_play(micro_run_dir, tmp_path, browser):
    """The checks above can fail: the same page with its first video gone."""
    from selenium.webdriver.common.by import By

    evaluation = tmp_path / "eval"
    shutil.copytree(micro_run_dir / "eval", evaluation)
    next((evaluation / "latent" / "videos").glob("*.mp4")).unlink()
    browser.get((evaluation / "report.html").as_uri())
    played = browser.execute_async_script(PLAY_SECONDS, browser.find_elements(By.TAG_NAME, "video")[0])
    assert isinstance(played, str) and "NotSupportedError" in played
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_directory_without_evaluations_is_refused_in_one_line(tmp_path, capsys):
    from agent.report import main

    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path)])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: evaluation directory {str(tmp_path)!r} holds no "
                                               "<agent>/metrics.json; expected the output of `jepa-agent evaluate` "
                                               "(paths.evaluation)")
