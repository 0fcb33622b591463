/*
 * The live map page of `heimdall serve`: the model's receivers, and for a chosen session
 * (an uploaded SigMF collection or a stored session) the posterior the service computes.
 * Talks only to the server it came from (relative URLs); tiles come from the configured URL.
 * State for tests and assistive tools: document.body.dataset.status
 * (loading | ready | working | result | error | token).
 */
(function () {
  'use strict';

  const config = JSON.parse(document.getElementById('heimdall-config').textContent);
  const $ = (id) => document.getElementById(id);
  const page = { config, current: null, result: null, token: sessionStorage.getItem('heimdall-token') || '' };
  window.heimdallPage = page;

  function setStatus(status, text) {
    document.body.dataset.status = status;
    $('status').textContent = text || '';
  }

  function showError(text) {
    const box = $('error');
    box.textContent = text;
    box.hidden = false;
    setStatus('error', 'The service refused the session.');
  }

  function clearError() {
    $('error').hidden = true;
    $('error').textContent = '';
  }

  // The service's refusal as readable lines ("where: what").
  function describe(status, body) {
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => {
        const where = (d.loc || []).filter((p) => p !== 'body').join('.');
        return (where ? where + ': ' : '') + d.msg;
      }).join('\n');
    }
    if (body && typeof body.detail === 'string') return body.detail;
    return 'HTTP ' + status;
  }

  class TokenNeeded extends Error {}

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (page.token) opts.headers.Authorization = 'Bearer ' + page.token;
    const response = await fetch(path, opts);
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.status === 401) {
      askToken(describe(401, body));
      throw new TokenNeeded();
    }
    if (!response.ok) throw new Error(describe(response.status, body));
    return body;
  }

  function askToken(message) {
    $('token-form').hidden = false;
    $('token-message').textContent = message || 'This server needs an API token.';
    setStatus('token', 'An API token is needed.');
    $('token').focus();
  }

  function show(result) {
    if (page.current) page.current.group.remove();
    page.result = result;
    page.current = HeimdallMap.drawResult(page.map, result);
    HeimdallMap.renderResult($('result'), result);
    $('result').hidden = false;
    page.map.fitBounds(page.current.bounds.pad(0.05));
    setStatus('result', 'Located: MAP point ' + result.posterior.map.latitude.toFixed(4) + ', ' +
      result.posterior.map.longitude.toFixed(4) + '.');
  }

  async function run(label, request) {
    clearError();
    setStatus('working', label);
    try {
      show(await request());
    } catch (e) {
      if (!(e instanceof TokenNeeded)) showError(e.message);
    }
  }

  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  async function upload(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    await run('Uploading ' + files.length + ' files…', async () => {
      const payload = [];
      for (const f of files) payload.push({ name: f.name, data_base64: toBase64(await f.arrayBuffer()) });
      return api('v1/upload/sigmf', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ files: payload }),
      });
    });
  }

  async function loadModel() {
    const card = await api('v1/model');
    $('model').textContent = 'model ' + card.model_version +
      (card.network ? ', network ' + card.network.name : '');
    if (page.stations) page.stations.remove();
    if (card.network) {
      page.stations = HeimdallMap.drawStations(page.map, card.network.receivers.map((r) => (
        { id: r.id, latitude: r.lat, longitude: r.lon })));
    }
    const a = card.trained_area;
    if (a && !page.current) page.map.fitBounds([[a.lat_min, a.lon_min], [a.lat_max, a.lon_max]]);
    if (config.has_data) {
      const list = await api('v1/sessions');
      const select = $('stored-select');
      select.replaceChildren(new Option('— choose a session —', ''));
      for (const s of list.sessions) {
        select.appendChild(new Option('#' + s.index + ' (id ' + s.session_id + ')' +
          (s.labelled ? ', truth known' : ''), String(s.index)));
      }
      $('stored').hidden = false;
    }
  }

  async function start() {
    setStatus('loading', 'Loading the map…');
    page.map = HeimdallMap.createMap($('map'), config.basemap);
    HeimdallMap.legend(page.map);
    try {
      const atlas = await fetch('static/vendor/countries-50m.json');
      page.atlas = HeimdallMap.drawAtlas(page.map, await atlas.json());
    } catch (e) {
      showError('Borders could not be loaded: ' + e.message);
    }
    if (config.token_required && !page.token) {
      askToken('This server needs an API token for its /v1 routes.');
      return;
    }
    try {
      await loadModel();
      setStatus('ready', 'Ready: drop a SigMF session or choose a stored one.');
    } catch (e) {
      if (!(e instanceof TokenNeeded)) showError(e.message);
    }
  }

  $('files').addEventListener('change', (ev) => upload(ev.target.files));
  const drop = $('drop');
  for (const name of ['dragenter', 'dragover']) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  }
  for (const name of ['dragleave', 'drop']) {
    drop.addEventListener(name, () => drop.classList.remove('over'));
  }
  drop.addEventListener('drop', (ev) => { ev.preventDefault(); upload(ev.dataTransfer.files); });
  $('stored-select').addEventListener('change', (ev) => {
    const index = ev.target.value;
    if (index !== '') run('Locating stored session #' + index + '…', () => api('v1/sessions/' + index));
  });
  $('token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    page.token = $('token').value.trim();
    sessionStorage.setItem('heimdall-token', page.token);
    $('token-form').hidden = true;
    clearError();
    try {
      await loadModel();
      setStatus('ready', 'Ready: drop a SigMF session or choose a stored one.');
    } catch (e) {
      if (!(e instanceof TokenNeeded)) showError(e.message);
    }
  });
  start();
})();
