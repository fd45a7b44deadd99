// A real browser (Debian's headless Chromium, driven by Playwright) loads a
// page from one loopback origin whose @supabase/auth-js signs up, logs in,
// refreshes and reads the user against a tenant on another origin: CORS as
// a single-page app meets it.
//
// Needs KEYSHARD_TENANT_A_URL (test/authjs.sh sets it) and Chromium at
// CHROMIUM (default /usr/bin/chromium); without Chromium it skips.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const A = process.env.KEYSHARD_TENANT_A_URL
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium'

// The app's page: auth-js from its ES modules (tslib mapped), calling the
// tenant with the headers supabase-js sends, apikey included.
const page = (tenant) => `<!doctype html>
<html><head><title>keyshard browser test</title>
<script type="importmap">{"imports": {"tslib": "/tslib.mjs"}}</script></head>
<body><script type="module">
import { AuthClient } from '/auth-js/index.js'
const auth = new AuthClient({ url: ${JSON.stringify(tenant)}, headers: { apikey: 'anon-key-of-the-app' },
  autoRefreshToken: false, persistSession: false, detectSessionInUrl: false })
const email = 'browser-' + Date.now() + '@example.com', password = 'correct horse battery'
const out = {}
try {
  const up = await auth.signUp({ email, password })
  out.signUp = up.error ? up.error.message : up.data.user.email
  const inn = await auth.signInWithPassword({ email, password })
  out.signIn = inn.error ? inn.error.message : 'ok'
  const before = inn.data.session?.refresh_token
  const ref = await auth.refreshSession()
  out.refresh = ref.error ? ref.error.message : (ref.data.session.refresh_token !== before ? 'rotated' : 'same')
  const me = await auth.getUser()
  out.user = me.error ? me.error.message : me.data.user.email
  out.email = email
} catch (e) {
  out.thrown = String(e)
}
window.result = out
</script></body></html>`

const types = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html' }

// serve answers the page and auth-js's files on a loopback port.
function serve(tenant) {
  const root = join(here, 'node_modules', '@supabase', 'auth-js', 'dist', 'module')
  const srv = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname
    let file
    if (path === '/favicon.ico') {
      res.writeHead(204)
      return res.end()
    }
    if (path === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      return res.end(page(tenant))
    } else if (path === '/tslib.mjs') {
      file = join(here, 'node_modules', 'tslib', 'tslib.es6.mjs')
    } else if (path.startsWith('/auth-js/')) {
      file = normalize(join(root, path.slice('/auth-js/'.length)))
      if (!file.startsWith(root)) file = null
    }
    // The package's modules import extensionless paths, as bundlers resolve them.
    for (const suffix of ['.js', '/index.js']) {
      if (file && !existsSync(file) && existsSync(file + suffix)) file += suffix
    }
    if (!file || !existsSync(file)) {
      res.writeHead(404)
      return res.end()
    }
    res.writeHead(200, { 'Content-Type': types[file.slice(file.lastIndexOf('.'))] || 'application/octet-stream' })
    res.end(readFileSync(file))
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)))
}

test('a page on another origin uses the tenant through auth-js', { skip: !existsSync(browserPath) && `no Chromium at ${browserPath}` }, async () => {
  assert.ok(A, 'set KEYSHARD_TENANT_A_URL')
  const srv = await serve(A)
  const origin = `http://127.0.0.1:${srv.address().port}`
  assert.notEqual(new URL(A).origin, origin)
  const browser = await chromium.launch({
    executablePath: browserPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  try {
    const tab = await browser.newPage()
    const problems = []
    tab.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()) })
    tab.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`))
    tab.on('pageerror', (e) => problems.push(String(e)))
    await tab.goto(origin + '/')
    try {
      await tab.waitForFunction(() => window.result, null, { timeout: 30_000 })
    } catch (e) {
      throw new Error(`the page gave no result: ${e.message}; console: ${problems.join(' | ')}`)
    }
    const out = await tab.evaluate(() => window.result)
    assert.equal(out.thrown, undefined, `the page threw: ${out.thrown}; console: ${problems}`)
    assert.equal(out.signUp, out.email, `signUp: ${out.signUp}; console: ${problems}`)
    assert.equal(out.signIn, 'ok')
    assert.equal(out.refresh, 'rotated')
    assert.equal(out.user, out.email)
    assert.deepEqual(problems, [], 'no CORS or script error in the console')
  } finally {
    await browser.close()
    srv.close()
  }
})
