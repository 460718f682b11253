// Look at the DAGs' trigger forms in chromium, as an investigator sees them (issue 25, item 6): with only the
// required fields filled, is the Trigger button enabled? Prints each DAG's state; writes screenshots.
//
//   npm install puppeteer-core@23            # in a scratch folder; the system chromium is used
//   AIRFLOW_HOME=... AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True \
//     airflow db migrate && airflow dags reserialize && airflow api-server --host 127.0.0.1 --port 8093 &
//   NODE_PATH=<scratch>/node_modules node bench/trigger_form.js [http://127.0.0.1:8093] [OUT_DIR]
const puppeteer = require('puppeteer-core');
const base = process.argv[2] || 'http://127.0.0.1:8093';
const out = process.argv[3] || '/tmp';
const sleep = ms => new Promise(r => setTimeout(r, ms));
// the section holding each DAG's required fields, and what to type into them
const FORMS = {
  profile_audit_investigate: {section: 'Export', values: ['/data/export']},
  profile_audit_nightly: {section: 'Export', values: []},
  profile_audit_train_probe: {section: 'Training', values: ['/data/real', '/data/fake']},
};

(async () => {
  const browser = await puppeteer.launch({executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu']});
  const page = await browser.newPage();
  await page.setViewport({width: 1400, height: 1400});
  const triggerEnabled = () => page.evaluate(() => [...document.querySelectorAll('[role=dialog] button')]
    .filter(b => /^Trigger$/.test(b.innerText.trim())).every(b => !b.disabled));
  for (const [dag, form] of Object.entries(FORMS)) {
    await page.goto(`${base}/dags/${dag}`, {waitUntil: 'networkidle2', timeout: 60000});
    await sleep(2000);
    await page.evaluate(() => [...document.querySelectorAll('button')].find(b => /^Trigger/.test(b.innerText.trim())).click());
    await sleep(2500);
    for (const el of await page.$$('[role=dialog] button')) {  // open the section with the required fields
      if ((await page.evaluate(x => x.innerText.trim(), el)) === form.section) { await el.click(); await sleep(800); break; }
    }
    const empty = await triggerEnabled();
    for (const value of form.values) {  // each required field the form marks invalid, in order
      const input = await page.$('[role=dialog] input[aria-invalid=true], [role=dialog] textarea[aria-invalid=true]');
      if (!input) { console.log(`${dag}: no invalid field left for ${value}`); break; }
      await input.click(); await input.type(value); await sleep(500);
    }
    const filled = await triggerEnabled();
    await page.screenshot({path: `${out}/${dag}-trigger-form.png`});
    console.log(`${dag}: Trigger enabled when empty ${empty}, with the required fields filled ${filled}`);
  }
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
