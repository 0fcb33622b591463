/*
 * Heimdall map drawing: basemap (tiles over Natural Earth land, coastlines and borders),
 * receivers, a session's posterior (heat raster computed by the service, HPD contours,
 * MAP point, mean with its 1-sigma and 95 % ellipses), tables, and evaluation sessions.
 * Used by the live page (page.js) and by self-contained documents (heimdall locate --html,
 * the evaluation report): a document holding <script id="heimdall-data"> is drawn at load.
 * Needs Leaflet (L) and topojson-client (topojson). Never requests anything itself.
 */
(function (global) {
  'use strict';

  const STATES = {
    heard: { color: '#1a6e2e', fillColor: '#4dac26', label: 'heard' },
    silent: { color: '#a64b00', fillColor: '#f1a340', label: 'silent' },
    offline: { color: '#444444', fillColor: '#ffffff', label: 'offline' },
    station: { color: '#333333', fillColor: '#9e9e9e', label: 'network station' },
  };
  const BLUE = '#0b4f9c';
  const PNG_DATA = 'data:image/png;' + 'base64,'; // split: reports count their own inlined PNGs

  // Data as text, never as markup (Leaflet tooltips take HTML strings).
  function plain(text) {
    const span = document.createElement('span');
    span.textContent = text;
    return span;
  }

  function createMap(element, basemap) {
    const map = L.map(element, { worldCopyJump: true, minZoom: 2, maxZoom: 18 });
    map.getContainer().classList.add('heimdall-map');
    for (const [name, z] of [['land', 150], ['borders', 160], ['heat', 350]]) {
      map.createPane(name).style.zIndex = String(z);
    }
    map.getPane('heat').style.pointerEvents = 'none';
    L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
    if (basemap && basemap.tiles) {
      L.tileLayer(basemap.tiles, { attribution: basemap.attribution || '', maxZoom: 18 }).addTo(map);
    }
    map.attributionControl.addAttribution('Borders and coastlines: Natural Earth');
    map.setView([45, 10], 5);
    return map;
  }

  // Land, coastlines and country borders from a world-atlas TopoJSON (objects countries, land).
  function drawAtlas(map, topo) {
    const group = L.layerGroup().addTo(map);
    const land = topojson.feature(topo, topo.objects.land);
    L.geoJSON(land, {
      pane: 'land', interactive: false,
      style: { stroke: false, fillColor: '#f3f0e7', fillOpacity: 1 },
    }).addTo(group);
    const borders = topojson.mesh(topo, topo.objects.countries, (a, b) => a !== b);
    L.geoJSON(borders, {
      pane: 'borders', interactive: false,
      style: { color: '#7d7d7d', weight: 1, dashArray: '4 3', className: 'heimdall-border' },
    }).addTo(group);
    const coast = topojson.mesh(topo, topo.objects.land);
    L.geoJSON(coast, {
      pane: 'borders', interactive: false,
      style: { color: '#4d7396', weight: 1, className: 'heimdall-coast' },
    }).addTo(group);
    return group;
  }

  function receiverMarker(rx, state) {
    const s = STATES[state] || STATES.station;
    const marker = L.circleMarker([rx.latitude, rx.longitude], {
      radius: state === 'station' ? 5 : 7, color: s.color, weight: 2, fillColor: s.fillColor,
      fillOpacity: 0.95, className: 'heimdall-rx heimdall-rx-' + state,
    });
    marker.bindTooltip(plain(rx.id + ' (' + s.label + ')'));
    marker.heimdall = { id: rx.id, state: state };
    return marker;
  }

  function drawStations(map, receivers) {
    const group = L.layerGroup().addTo(map);
    for (const rx of receivers) receiverMarker(rx, 'station').addTo(group);
    return group;
  }

  function pct(level) {
    return Math.round(level * 100) + ' %';
  }

  function ellipseStyle(name) {
    return name === 'ellipse_1sigma'
      ? { color: BLUE, weight: 2, fill: false }
      : { color: BLUE, weight: 1.5, dashArray: '2 4', fill: false };
  }

  // One session's answer: heat layer, contours, ellipses, mean, MAP point, receivers, truth.
  function drawResult(map, result) {
    const group = L.layerGroup().addTo(map);
    const post = result.posterior;
    const b = post.raster.bounds;
    const rasterBounds = L.latLngBounds([b.south, b.west], [b.north, b.east]);
    const bounds = L.latLngBounds([b.south, b.west], [b.north, b.east]); // the view: raster, receivers, truth
    const heat = L.imageOverlay(PNG_DATA + post.raster.png_base64, rasterBounds, {
      pane: 'heat', opacity: 0.85, alt: 'posterior probability density', className: 'heimdall-heat',
    }).addTo(group);
    const contours = [];
    for (const hpd of post.hpd) {
      for (const ring of hpd.contours) {
        const line = L.polygon(ring, {
          color: '#111111', weight: hpd.level <= 0.5 ? 2.5 : 1.5, dashArray: hpd.level <= 0.5 ? null : '7 5',
          fill: false, className: 'heimdall-hpd',
        }).bindTooltip(pct(hpd.level) + ' highest-density region');
        line.heimdall = { level: hpd.level };
        contours.push(line.addTo(group));
      }
    }
    const ellipses = [];
    for (const f of result.geojson.features) {
      if (f.geometry.type !== 'Polygon') continue;
      const name = f.properties.name;
      ellipses.push(L.geoJSON(f, { style: ellipseStyle(name) })
        .bindTooltip(name === 'ellipse_1sigma' ? '1σ ellipse' : '95 % ellipse').addTo(group));
    }
    const receivers = (result.receivers || []).map((rx) => receiverMarker(rx, rx.state).addTo(group));
    const mean = L.circleMarker([result.latitude, result.longitude], {
      radius: 5, color: BLUE, weight: 2, fillColor: '#ffffff', fillOpacity: 1, className: 'heimdall-mean',
    }).bindTooltip('mean').addTo(group);
    const m = post.map;
    const mapPoint = L.marker([m.latitude, m.longitude], {
      icon: L.divIcon({ className: 'heimdall-map-point', html: '<span aria-hidden="true">✕</span>', iconSize: [22, 22] }),
      title: 'MAP point (most probable position)', alt: 'MAP point', keyboard: true, zIndexOffset: 1000,
    }).addTo(group);
    let truth = null;
    if (result.truth) {
      truth = L.marker([result.truth.latitude, result.truth.longitude], {
        icon: L.divIcon({ className: 'heimdall-truth', html: '<span aria-hidden="true">★</span>', iconSize: [22, 22] }),
        title: 'truth', alt: 'truth', keyboard: true, zIndexOffset: 900,
      }).addTo(group);
      bounds.extend(truth.getLatLng());
    }
    for (const r of receivers) bounds.extend(r.getLatLng());
    return { group, heat, contours, ellipses, receivers, mean, mapPoint, truth, bounds };
  }

  // Evaluation sessions: truth, estimate, 1-sigma and 95 % ellipses, error line; receivers.
  function drawSessions(map, data) {
    const group = L.layerGroup().addTo(map);
    const bounds = L.latLngBounds([]);
    for (const rx of data.receivers || []) {
      const mk = receiverMarker(rx, 'station').addTo(group);
      bounds.extend(mk.getLatLng());
    }
    for (const s of data.sessions) {
      const t = [s.truth.latitude, s.truth.longitude];
      const e = [s.estimate.latitude, s.estimate.longitude];
      L.polyline([t, e], { color: '#777777', weight: 1 }).addTo(group);
      if (s.ellipse_1sigma) L.polygon(s.ellipse_1sigma, ellipseStyle('ellipse_1sigma')).addTo(group);
      if (s.ellipse_95) L.polygon(s.ellipse_95, ellipseStyle('ellipse_95')).addTo(group);
      L.circleMarker(e, { radius: 4, color: BLUE, fillColor: BLUE, fillOpacity: 1, className: 'heimdall-estimate' })
        .bindTooltip(plain('session ' + s.id + ': error ' + s.error_km.toFixed(1) + ' km')).addTo(group);
      L.marker(t, {
        icon: L.divIcon({ className: 'heimdall-truth', html: '<span aria-hidden="true">★</span>', iconSize: [18, 18] }),
        title: 'truth of session ' + s.id,
      }).addTo(group);
      bounds.extend(t).extend(e);
    }
    return { group, bounds };
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function table(caption, head, rows) {
    const t = el('table');
    t.appendChild(el('caption', caption));
    const tr = el('tr');
    for (const h of head) {
      const th = el('th', h);
      th.scope = 'col';
      tr.appendChild(th);
    }
    t.appendChild(el('thead')).appendChild(tr);
    const body = t.appendChild(el('tbody'));
    for (const row of rows) {
      const r = body.appendChild(el('tr'));
      for (const c of row) r.appendChild(el('td', c));
    }
    return t;
  }

  function km(m) {
    return (m / 1000).toFixed(1) + ' km';
  }

  // The answer in words and tables (modes with probability, receivers), into `container`.
  function renderResult(container, result) {
    container.replaceChildren();
    const one = result.ellipse_1sigma;
    const e95 = result.ellipse_95;
    const dl = el('dl', null, 'heimdall-summary');
    const items = [
      ['Mean', result.latitude.toFixed(5) + ', ' + result.longitude.toFixed(5)],
      ['MAP point', result.posterior.map.latitude.toFixed(5) + ', ' + result.posterior.map.longitude.toFixed(5)],
      ['1σ ellipse', km(one.semi_major_m) + ' × ' + km(one.semi_minor_m) + ', major axis ' +
        one.orientation_deg.toFixed(0) + '° from north'],
      ['95 % ellipse', km(e95.semi_major_m) + ' × ' + km(e95.semi_minor_m)],
      ['Model', result.model_version],
    ];
    if (result.source) items.unshift(['Session', result.source]);
    if (result.truth) {
      items.push(['Truth', result.truth.latitude.toFixed(5) + ', ' + result.truth.longitude.toFixed(5) +
        ': error ' + result.truth.error_km.toFixed(1) + ' km, inside 1σ ' + (result.truth.inside_1sigma ? 'yes' : 'no') +
        ', inside 95 % ' + (result.truth.inside_95 ? 'yes' : 'no')]);
    }
    for (const [k, v] of items) {
      dl.appendChild(el('dt', k));
      dl.appendChild(el('dd', v));
    }
    container.appendChild(dl);
    const modes = result.posterior.modes.map((m, i) => [
      String(i + 1), m.latitude.toFixed(4) + ', ' + m.longitude.toFixed(4), (100 * m.probability).toFixed(1) + ' %',
    ]);
    const tm = table('Modes (local maxima; probability of each basin)',
      ['#', 'lat, lon', 'probability'], modes);
    tm.id = 'modes';
    container.appendChild(tm);
    const rx = (result.receivers || []).map((r) => [r.id, r.state]);
    const tr = table('Receivers', ['receiver', 'state'], rx);
    tr.id = 'receivers';
    container.appendChild(tr);
  }

  function legend(map) {
    const ctl = L.control({ position: 'bottomleft' });
    ctl.onAdd = function () {
      const div = el('div', null, 'heimdall-legend');
      div.setAttribute('aria-label', 'Legend');
      const rows = [
        ['heimdall-key-heard', 'receiver heard'], ['heimdall-key-silent', 'receiver silent'],
        ['heimdall-key-offline', 'receiver offline'], ['heimdall-key-station', 'network station'],
        ['heimdall-key-map', 'MAP point ✕'], ['heimdall-key-mean', 'mean, 1σ / 95 % ellipse'],
        ['heimdall-key-hpd', '50 % / 90 % region'], ['heimdall-key-truth', 'truth ★'],
      ];
      for (const [cls, text] of rows) {
        const row = div.appendChild(el('div'));
        row.appendChild(el('span', '', 'heimdall-key ' + cls)).setAttribute('aria-hidden', 'true');
        row.appendChild(el('span', text));
      }
      return div;
    };
    return ctl.addTo(map);
  }

  // Self-contained documents: data, atlas and basemap are in the page itself.
  function standalone() {
    const dataNode = document.getElementById('heimdall-data');
    if (!dataNode) return null;
    const data = JSON.parse(dataNode.textContent);
    const map = createMap(document.getElementById('heimdall-map'), data.basemap);
    const atlasNode = document.getElementById('heimdall-atlas');
    if (atlasNode) drawAtlas(map, JSON.parse(atlasNode.textContent));
    legend(map);
    let drawn;
    if (data.result) {
      drawn = drawResult(map, data.result);
      const panel = document.getElementById('heimdall-result');
      if (panel) renderResult(panel, data.result);
    } else {
      drawn = drawSessions(map, data);
    }
    if (drawn.bounds.isValid()) map.fitBounds(drawn.bounds.pad(0.05));
    global.heimdallDocument = { map, drawn, data };
    return global.heimdallDocument;
  }

  global.HeimdallMap = {
    createMap, drawAtlas, drawStations, drawResult, drawSessions, renderResult, legend, standalone,
  };
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', standalone);
  } else {
    standalone();
  }
})(window);
