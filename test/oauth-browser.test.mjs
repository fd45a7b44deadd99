// The hosted OAuth pages in a real browser (Debian's headless Chromium,
// driven by Playwright): the authorization code flow with PKCE (login,
// consent, back to the app with a code the test exchanges), the device
// flow (code entry, confirm, the device's poll gets tokens) and logout.
// Each page is saved as a screenshot under KEYSHARD_SCREENSHOTS.
//
// Needs KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_A_SERVICE_KEY (test/authjs.sh
// sets them) and Chromium at CHROMIUM (default /usr/bin/chromium).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const A = process.env.KEYSHARD_TENANT_A_URL
const KEY = process.env.KEYSHARD_TENANT_A_SERVICE_KEY
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium'
const shots = process.env.KEYSHARD_SCREENSHOTS || join(process.cwd(), 'screenshots')
const skip = !existsSync(browserPath) && `no Chromium at ${browserPath}`

const b64url = (buf) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')

async function admin (method, path, body) {
  const res = await fetch(A + path, {
    method, headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  })
  const text = await res.text()
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`)
  return text ? JSON.parse(text) : null
}

async function token (client, form) {
  const res = await fetch(A + '/oauth/token', {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64'),
    },
    body: new URLSearchParams(form),
  })
  return { status: res.status, body: await res.json() }
}

// app is the client's redirect target: a page that says it got a code.
function app () {
  const srv = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' })
    res.end('<!doctype html><title>App</title><h1>Back in the app</h1>')
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)))
}

async function launch () {
  return chromium.launch({
    executablePath: browserPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

async function shot (tab, name) {
  mkdirSync(shots, { recursive: true })
  await tab.screenshot({ path: join(shots, name + '.png'), fullPage: true })
}

test('hosted pages: code flow with PKCE, device flow, logout', { skip }, async () => {
  assert.ok(A && KEY, 'set KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_A_SERVICE_KEY')
  const email = `oauth-${Date.now()}@example.com`
  const password = 'correct horse battery'
  const su = await fetch(A + '/signup', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email, password }) })
  assert.equal(su.status, 200, await su.text())
  await admin('PATCH', '/admin/config/auth', { branding_display_name: 'Acme Notes', branding_primary_color: '#0f766e' })
  const srv = await app()
  const redirect = `http://127.0.0.1:${srv.address().port}/callback`
  const client = await admin('POST', '/admin/oauth/clients', {
    client_name: 'Notes for Desktop', redirect_uris: [redirect], post_logout_redirect_uris: [redirect],
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  })
  const browser = await launch()
  try {
    const ctx = await browser.newContext()
    const tab = await ctx.newPage()
    const problems = []
    tab.on('pageerror', (e) => problems.push(String(e)))
    // The wrong password and the wrong code are answered 400 on purpose,
    // which Chromium logs; anything else (a CSP refusal) is a problem.
    tab.on('console', (m) => { if (m.type() === 'error' && !/status of 400/.test(m.text())) problems.push(m.text()) })

    // Authorization code + PKCE.
    const verifier = b64url(randomBytes(32))
    const challenge = b64url(createHash('sha256').update(verifier).digest())
    const q = new URLSearchParams({
      response_type: 'code', client_id: client.client_id, redirect_uri: redirect, scope: 'openid email profile offline_access',
      state: 'st-42', nonce: 'n-42', code_challenge: challenge, code_challenge_method: 'S256',
    })
    await tab.goto(`${A}/oauth/authorize?${q}`)
    await tab.getByLabel('Email').waitFor()
    assert.match(await tab.title(), /Acme Notes/)
    await shot(tab, '1-login')
    await tab.getByLabel('Email').fill(email)
    await tab.getByLabel('Password').fill('not the password')
    await tab.getByRole('button', { name: 'Sign in' }).click()
    await tab.getByRole('alert').waitFor()
    await shot(tab, '2-login-error')
    await tab.getByLabel('Password').fill(password)
    await tab.getByRole('button', { name: 'Sign in' }).click()
    await tab.getByRole('button', { name: 'Allow' }).waitFor()
    assert.match(await tab.content(), /Notes for Desktop/)
    await shot(tab, '3-consent')
    await tab.getByRole('button', { name: 'Allow' }).click()
    await tab.waitForURL((u) => u.href.startsWith(redirect))
    await shot(tab, '4-back-in-the-app')
    const back = new URL(tab.url())
    assert.equal(back.searchParams.get('state'), 'st-42')
    const code = back.searchParams.get('code')
    assert.ok(code)
    const ex = await token(client, { grant_type: 'authorization_code', code, redirect_uri: redirect, code_verifier: verifier })
    assert.equal(ex.status, 200, JSON.stringify(ex.body))
    assert.ok(ex.body.access_token && ex.body.id_token && ex.body.refresh_token)
    const idClaims = JSON.parse(Buffer.from(ex.body.id_token.split('.')[1], 'base64url'))
    assert.equal(idClaims.nonce, 'n-42')
    assert.equal(idClaims.email, email)

    // Device flow: the device asks, the signed-in browser enters the code.
    const da = await fetch(A + '/oauth/device_authorization', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: 'Basic ' + Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64') },
      body: new URLSearchParams({ scope: 'openid email' }),
    }).then((r) => r.json())
    assert.match(da.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/)
    const pending = await token(client, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: da.device_code })
    assert.equal(pending.body.error, 'authorization_pending')
    await tab.goto(da.verification_uri)
    await tab.getByLabel('Code').waitFor()
    await tab.getByLabel('Code').fill('BBBB-BBBB')
    await tab.getByRole('button', { name: 'Continue' }).click()
    await tab.locator('#user_code-error').waitFor()
    await shot(tab, '5-device-wrong-code')
    await tab.getByLabel('Code').fill(da.user_code.toLowerCase())
    await tab.getByRole('button', { name: 'Continue' }).click()
    await tab.getByRole('button', { name: 'Allow' }).waitFor()
    await shot(tab, '6-device-confirm')
    await tab.getByRole('button', { name: 'Allow' }).click()
    await tab.getByRole('status').waitFor()
    await shot(tab, '7-device-done')
    let got
    for (let i = 0; i < 20; i++) {
      got = await token(client, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: da.device_code })
      if (got.status === 200 || got.body.error !== 'slow_down') break
      await new Promise((r) => setTimeout(r, 500))
    }
    assert.equal(got.status, 200, JSON.stringify(got.body))
    assert.ok(got.body.access_token)

    // Logout: confirm, then back to the app.
    const lq = new URLSearchParams({ id_token_hint: ex.body.id_token, post_logout_redirect_uri: redirect, state: 'bye' })
    await tab.goto(`${A}/oauth/end_session?${lq}`)
    await tab.getByRole('button', { name: 'Sign out' }).waitFor()
    await shot(tab, '8-logout')
    await tab.getByRole('button', { name: 'Sign out' }).click()
    await tab.waitForURL((u) => u.href.startsWith(redirect))
    assert.equal(new URL(tab.url()).searchParams.get('state'), 'bye')
    const after = await token(client, { grant_type: 'refresh_token', refresh_token: ex.body.refresh_token })
    assert.equal(after.body.error, 'invalid_grant', 'logout ends the grant')
    assert.deepEqual(problems, [], 'no script or CSP error on the hosted pages')
  } finally {
    await browser.close()
    srv.close()
  }
})
