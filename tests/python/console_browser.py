"""Drives the operator console in headless Chromium through WebDriver
(Debian's chromium and chromium-driver; selenium from PyPI).

Usage: python console_browser.py BASE TOKEN SYMBOL SCREENSHOT

Logs in with TOKEN, opens the dead letters, checks that one letter of
SYMBOL is listed, clicks its Replay button, reads the confirmation, sees
the letter leave the queue, then waits until the page shows the replayed
job's outcome from its worker ("succeeded: N bars"), and saves a
screenshot (PNG) of that page to SCREENSHOT (and of the overview beside it,
`-overview.png`). Prints one JSON object; exits non-zero on
any failed step.
"""

import json
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> None:
    base, token, symbol, screenshot = sys.argv[1:5]
    steps = []
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            driver.get(f"{base}/console/login")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "login").click()
            # A click does not wait for the page its form loads.
            WebDriverWait(driver, 30).until(ready.title_contains("Overview"))
            steps.append("logged in")

            driver.get(f"{base}/console/dlq")
            rows = driver.find_elements(By.CSS_SELECTOR, "tr.letter")
            mine = [r for r in rows if r.find_elements(By.TAG_NAME, "td")[2].text == symbol]
            assert len(mine) == 1, f"{len(rows)} letters listed, {len(mine)} of {symbol}"
            letter_id = mine[0].get_attribute("data-id")
            steps.append(f"listed {letter_id}")

            mine[0].find_element(By.CSS_SELECTOR, "button.replay").click()
            flash = WebDriverWait(driver, 30).until(ready.presence_of_element_located((By.ID, "flash"))).text
            assert "Replayed 1 dead letter" in flash, flash
            steps.append(flash)

            deadline = time.time() + 60
            while True:
                driver.get(f"{base}/console/dlq")
                ids = [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr.letter")]
                if letter_id not in ids:
                    break
                assert time.time() < deadline, "the letter is still dead-lettered a minute after its replay"
                time.sleep(1)
            steps.append("the letter left the queue")

            deadline = time.time() + 60
            while True:
                outcome = ""
                for row in driver.find_elements(By.CSS_SELECTOR, "tr.replay"):
                    if row.get_attribute("data-id") == letter_id:
                        outcome = row.find_element(By.CSS_SELECTOR, "td.outcome").text
                if outcome.startswith("succeeded"):
                    break
                assert not outcome.startswith("dead"), f"the replayed job failed: {outcome}"
                assert time.time() < deadline, f"no outcome a minute after the replay: {outcome!r}"
                time.sleep(1)
                driver.get(f"{base}/console/dlq")
            steps.append(f"the job completed: {outcome}")
            driver.save_screenshot(screenshot)

            driver.get(f"{base}/console")
            dead = driver.find_element(By.ID, "dead-letters").text
            workers = driver.find_element(By.ID, "workers").text
            driver.save_screenshot(screenshot.replace(".png", "-overview.png"))
            steps.append("screenshots saved")
            print(json.dumps({"steps": steps, "letter": letter_id, "outcome": outcome, "dead_letters": dead, "workers": workers}))
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
