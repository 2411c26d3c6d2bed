/* siyu chat sidebar: runs inside WeCom's built-in browser beside a conversation.
 *
 * 1. Registers the page with the WeCom client through the vendored @wecom/jssdk
 *    (ww.register → agentConfig, signed by the server for this page's URL).
 * 2. Asks the client where it was opened (ww.getContext) and with whom
 *    (ww.getCurExternalContact / ww.getCurExternalChat), then loads that customer's
 *    card and the recent thread the pre-send check reads as context.
 * 3. Checks what the advisor types (debounced POST /api/v1/compliance/check), shows each
 *    finding's span, rule, basis and suggested rewording; sends a clean text with
 *    ww.sendChatMessage; a text with a violation only after a stated reason (recorded
 *    server-side, a review case opened).
 * 4. Lists approved snippets and sends one with a tap.
 * 5. Opens the SOP touch a digest's deep link names (?customer=…&touch=…) above the
 *    tabs: its content filled in, campaign, due time, state; 填入并检查 puts the text in
 *    the checked box, and once it is sent to that customer the send is recorded on the
 *    touch (POST /api/v1/touches/{id}/sent) — as for a touch of the SOP panel.
 *
 * No inline script or style anywhere (the CSP forbids both): text goes in with
 * textContent, visibility with the hidden attribute.
 */
(function () {
  "use strict";

  var body = document.body;
  var cfg = body.dataset;
  var CATEGORY_LABELS = JSON.parse(cfg.categories || "{}");
  var KIND_LABELS = { text: "文本", image: "图片", link: "链接", miniprogram: "小程序" };
  var CHECK_DEBOUNCE_MS = 400;
  var WECOM_TIMEOUT_MS = 6000;

  var state = {
    externalUserId: null,
    chatId: null,
    thread: [],
    // The last answer of the check and the exact text it judged.
    checked: null,
    seq: 0,
    timer: null,
    overrideKey: null,
    wecom: false,
    // The SOP touch the deep link names (the server's answer), and the touch whose
    // content is in the send box (recorded on it once sent to its customer).
    touch: null,
    composedTouch: null
  };

  // The digest's deep link: /sidebar/?customer=<external_userid>&touch=<id>.
  var deepLink = (function () {
    var q = new URLSearchParams(window.location.search);
    var touch = q.get("touch");
    if (touch === null) return null;
    return { touch: touch, customer: q.get("customer") || "" };
  })();

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function headers(json) {
    var h = { "X-CSRF-Token": cfg.csrf, "Accept": "application/json" };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  function postJSON(url, payload) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: headers(true),
      body: JSON.stringify(payload)
    });
  }

  function withTimeout(promise, ms) {
    return new Promise(function (resolve, reject) {
      var t = setTimeout(function () { reject(new Error("timeout")); }, ms);
      promise.then(function (v) { clearTimeout(t); resolve(v); },
                   function (e) { clearTimeout(t); reject(e); });
    });
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var a = new Uint8Array(16);
    window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function toast(text, tone) {
    var t = $("sb-toast");
    t.textContent = text;
    t.className = "sb-toast " + (tone || "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 6000);
  }

  // ------------------------------------------------------------------ tabs

  var tabs = Array.prototype.slice.call(document.querySelectorAll(".sb-tab"));
  tabs.forEach(function (tab) {
    tab.addEventListener("click", function () { showTab(tab.id); });
  });

  function showTab(id) {
    tabs.forEach(function (tab) {
      var on = tab.id === id;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      $(tab.getAttribute("aria-controls")).hidden = !on;
    });
    $("sb-toast").hidden = true;
    if (id === "tab-snippets" && !loadSnippets.done) loadSnippets();
  }

  // ------------------------------------------------------------------ WeCom

  function signAgentConfig(url) {
    return postJSON(cfg.signatureUrl, { url: url }).then(function (r) {
      if (!r.ok) throw new Error("signature " + r.status);
      return r.json();
    }).then(function (s) {
      return { timestamp: s.timestamp, nonceStr: s.nonceStr, signature: s.signature };
    });
  }

  function whoStatus(text) {
    var who = $("sb-who");
    who.textContent = "";
    who.appendChild(el("p", "muted", text));
  }

  function startWeCom() {
    if (!window.ww || !window.ww.register) {
      whoStatus("未加载企业微信 JS-SDK：仅可使用发送前检查");
      openDeepLink(true);
      return;
    }
    window.ww.register({
      corpId: cfg.corpId,
      agentId: Number(cfg.agentId),
      jsApiList: cfg.jsApiList.split(","),
      getAgentConfigSignature: signAgentConfig
    });
    withTimeout(window.ww.getContext(), WECOM_TIMEOUT_MS).then(function (ctx) {
      state.wecom = true;
      var entry = ctx.entry;
      if (entry === "single_chat_tools" || entry === "contact_profile" || entry === "single_kf_tools") {
        return withTimeout(window.ww.getCurExternalContact(), WECOM_TIMEOUT_MS).then(function (res) {
          state.externalUserId = res.userId;
          return loadConversation(cfg.customerUrl + "?external_userid=" + encodeURIComponent(res.userId))
            .then(function () { return openDeepLink(false); });
        });
      }
      if (entry === "group_chat_tools") {
        return withTimeout(window.ww.getCurExternalChat(), WECOM_TIMEOUT_MS).then(function (res) {
          state.chatId = res.chatId;
          return loadConversation(cfg.groupUrl + "?chat_id=" + encodeURIComponent(res.chatId))
            .then(function () { return openDeepLink(false); });
        });
      }
      whoStatus("请从与客户的单聊或客户群的聊天工具栏打开");
      return openDeepLink(true);
    }).catch(function () {
      whoStatus("未能读取当前会话（请在企业微信聊天工具栏中打开）：仅可使用发送前检查");
      return openDeepLink(true);
    }).then(updateSend);
  }

  function loadConversation(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok) throw new Error("conversation " + r.status);
        return r.text();
      })
      .then(function (html) {
        var tpl = document.createElement("template");
        tpl.innerHTML = html;
        var card = tpl.content.getElementById("sb-who-card");
        var detail = tpl.content.getElementById("sb-detail");
        var thread = tpl.content.getElementById("sb-thread");
        var who = $("sb-who");
        who.textContent = "";
        if (card) who.appendChild(card);
        var pane = $("sb-customer");
        pane.textContent = "";
        if (detail) pane.appendChild(detail);
        try {
          state.thread = thread ? JSON.parse(thread.textContent) : [];
        } catch (e) {
          state.thread = [];
        }
        if ($("sb-text").value.trim()) scheduleCheck(0);
      });
  }

  // ------------------------------------------------------------------ the check

  var textBox = $("sb-text");
  textBox.addEventListener("input", function () {
    state.overrideKey = null;
    if (!textBox.value.trim()) state.composedTouch = null;
    scheduleCheck(CHECK_DEBOUNCE_MS);
  });

  function scheduleCheck(delay) {
    clearTimeout(state.timer);
    state.seq += 1;  // any answer still on its way is for an older text
    updateSend();
    if (!textBox.value.trim()) {
      state.checked = null;
      renderFindings(null, "");
      setStatus("输入后自动检查", "muted");
      updateSend();
      return;
    }
    setStatus("检查中…", "muted");
    state.timer = setTimeout(runCheck, delay);
  }

  function setStatus(text, tone) {
    var s = $("sb-status");
    s.textContent = "";
    s.appendChild(el("span", tone || "", text));
  }

  function runCheck() {
    var text = textBox.value;
    var seq = ++state.seq;
    return postJSON(cfg.checkUrl, { text: text, role: "advisor", context: state.thread })
      .then(function (r) {
        if (seq !== state.seq) return null;
        if (r.status === 429) {
          var wait = Number(r.headers.get("Retry-After") || "5");
          setStatus("检查过于频繁，" + wait + " 秒后自动重试", "warn-text");
          state.timer = setTimeout(runCheck, wait * 1000);
          return null;
        }
        if (r.status === 503) {
          setStatus("检查繁忙，稍后自动重试", "warn-text");
          state.timer = setTimeout(runCheck, 1500);
          return null;
        }
        if (r.status === 401) {
          setStatus("登录已过期，请关闭侧边栏后重新打开", "bad-text");
          return null;
        }
        if (!r.ok) {
          setStatus("检查失败（" + r.status + "）", "bad-text");
          return null;
        }
        return r.json().then(function (analysis) {
          if (seq !== state.seq) return;
          state.checked = { text: text, analysis: analysis };
          renderFindings(analysis, text);
        });
      })
      .catch(function () {
        if (seq === state.seq) setStatus("网络异常，检查未完成", "bad-text");
      })
      .then(updateSend);
  }

  function violations(analysis) {
    return (analysis && analysis.violations) || [];
  }

  function hasViolation(analysis) {
    return violations(analysis).some(function (f) { return f.severity === "violation"; });
  }

  function renderFindings(analysis, text) {
    var preview = $("sb-preview");
    var list = $("sb-findings");
    preview.textContent = "";
    list.textContent = "";
    var found = violations(analysis);
    if (!analysis) { preview.hidden = true; return; }
    if (!found.length) {
      preview.hidden = true;
      setStatus(state.wecom ? "✓ 未发现合规问题，可以发送" : "✓ 未发现合规问题", "ok-text");
      return;
    }
    var bad = hasViolation(analysis);
    setStatus(bad ? "发现违规内容，不能直接发送" : "有待复核的表述，请确认后发送", bad ? "bad-text" : "warn-text");
    // The text with each finding's span marked (offsets are the text's as sent).
    var spans = found
      .filter(function (f) { return f.start >= 0 && f.end > f.start && f.end <= text.length; })
      .map(function (f) { return { start: f.start, end: f.end, severity: f.severity, label: CATEGORY_LABELS[f.category] || f.category }; })
      .sort(function (a, b) { return a.start - b.start || b.end - a.end; });
    var pos = 0;
    spans.forEach(function (s) {
      if (s.start < pos) return;  // overlapping span: the first one drawn stands
      if (s.start > pos) preview.appendChild(document.createTextNode(text.slice(pos, s.start)));
      var mark = el("mark", s.severity === "violation" ? "hl-violation" : "hl-review", text.slice(s.start, s.end));
      mark.title = s.label;
      preview.appendChild(mark);
      pos = s.end;
    });
    if (pos < text.length) preview.appendChild(document.createTextNode(text.slice(pos)));
    preview.hidden = false;

    found.forEach(function (f) {
      var li = el("li", "sb-finding " + (f.severity === "violation" ? "is-violation" : "is-review"));
      var head = el("div", "sb-finding-head");
      head.appendChild(el("span", "tag " + (f.severity === "violation" ? "bad" : "warn"), f.severity === "violation" ? "违规" : "待复核"));
      head.appendChild(el("strong", "", " " + (CATEGORY_LABELS[f.category] || f.category)));
      li.appendChild(head);
      if (f.evidence) li.appendChild(el("div", "sb-evidence", "「" + f.evidence + "」"));
      if (f.basis) li.appendChild(el("div", "sb-basis", "依据：" + f.basis));
      li.appendChild(el("div", "sb-rule muted", "规则 " + (f.rule_id || "—") + (f.source === "model" ? " · 模型识别" : "")));
      if (f.context_evidence) li.appendChild(el("div", "sb-context muted", "结合上文：「" + f.context_evidence + "」"));
      if (f.suggestion) {
        var sug = el("div", "sb-suggestion");
        sug.appendChild(el("span", "sb-suggestion-label", "建议改为："));
        sug.appendChild(el("span", "sb-suggestion-text", f.suggestion));
        var use = el("button", "btn small", "采用建议");
        use.type = "button";
        use.addEventListener("click", function () { applySuggestion(f); });
        sug.appendChild(use);
        li.appendChild(sug);
      }
      list.appendChild(li);
    });
  }

  function applySuggestion(f) {
    var text = textBox.value;
    if (state.checked && state.checked.text === text && f.end <= text.length && f.start >= 0) {
      textBox.value = text.slice(0, f.start) + f.suggestion + text.slice(f.end);
    } else {
      textBox.value = f.suggestion;
    }
    state.overrideKey = null;
    scheduleCheck(0);
  }

  function upToDate() {
    return !!state.checked && state.checked.text === textBox.value && !!textBox.value.trim();
  }

  function updateSend() {
    var ready = upToDate();
    var bad = ready && hasViolation(state.checked.analysis);
    $("sb-send").disabled = !ready || bad || !state.wecom;
    $("sb-override").hidden = !bad;
    if (!bad) $("sb-override-form").hidden = true;
    $("sb-send").textContent = state.wecom ? "发送到聊天" : "发送到聊天（需在企业微信中打开）";
    Array.prototype.forEach.call(document.querySelectorAll(".sb-snippet button"), function (b) {
      b.disabled = !state.wecom;
    });
  }

  function sendText(text) {
    return window.ww.sendChatMessage({ msgtype: "text", enterChat: true, text: { content: text } });
  }

  $("sb-send").addEventListener("click", function () {
    if (!upToDate() || hasViolation(state.checked.analysis)) return;
    var text = state.checked.text;
    var touchId = state.composedTouch;
    $("sb-send").disabled = true;
    sendText(text).then(function () {
      toast("已发送", "ok");
      textBox.value = "";
      state.composedTouch = null;
      scheduleCheck(0);
      return recordTouchSent(touchId);
    }).catch(function (err) {
      toast("发送失败：" + ((err && err.errMsg) || "企业微信未响应"), "bad");
      updateSend();
    });
  });

  // ------------------------------------------------------------------ the override

  $("sb-reason").addEventListener("input", function () { $("sb-reason-error").hidden = true; });

  $("sb-override-open").addEventListener("click", function () {
    $("sb-override-form").hidden = false;
    $("sb-reason").focus();
  });

  $("sb-override-send").addEventListener("click", function () {
    var errorBox = $("sb-reason-error");
    errorBox.hidden = true;
    if (!upToDate() || !hasViolation(state.checked.analysis)) return;
    var reason = $("sb-reason").value.trim();
    if (reason.length < Number(cfg.reasonMin || 4)) {
      errorBox.textContent = "请说明理由（至少 " + cfg.reasonMin + " 个字）";
      errorBox.hidden = false;
      return;
    }
    if (!state.externalUserId && !state.chatId) {
      errorBox.textContent = "未识别到当前会话，无法放行；请在与客户的聊天中打开";
      errorBox.hidden = false;
      return;
    }
    state.overrideKey = state.overrideKey || newKey();
    var text = state.checked.text;
    var button = $("sb-override-send");
    button.disabled = true;
    postJSON(cfg.overrideUrl, {
      text: text,
      reason: reason,
      key: state.overrideKey,
      external_userid: state.externalUserId,
      chat_id: state.chatId
    }).then(function (r) {
      return r.json().then(function (answer) { return { status: r.status, answer: answer }; });
    }).then(function (res) {
      if (res.status !== 200 && res.status !== 201) {
        var message = (res.answer.error && res.answer.error.message) || ("提交失败（" + res.status + "）");
        errorBox.textContent = message;
        errorBox.hidden = false;
        return null;
      }
      var caseId = res.answer.case_id;
      var touchId = state.composedTouch;
      return sendText(text).then(function () {
        toast("已发送。理由已记录，并转合规复核（案件 #" + caseId + "）", "warn");
        $("sb-reason").value = "";
        textBox.value = "";
        state.overrideKey = null;
        state.composedTouch = null;
        scheduleCheck(0);
        return recordTouchSent(touchId);
      }, function (err) {
        toast("理由已记录（案件 #" + caseId + "），但发送失败：" + ((err && err.errMsg) || "企业微信未响应"), "bad");
      });
    }).catch(function () {
      errorBox.textContent = "网络异常，请重试";
      errorBox.hidden = false;
    }).then(function () { button.disabled = false; });
  });

  // ------------------------------------------------------------------ snippets

  var snippetTimer = null;
  $("sb-snippet-q").addEventListener("input", function () {
    clearTimeout(snippetTimer);
    snippetTimer = setTimeout(loadSnippets, 300);
  });
  $("sb-snippet-topic").addEventListener("change", function () { loadSnippets(); });

  function loadSnippets() {
    loadSnippets.done = true;
    var params = new URLSearchParams();
    var q = $("sb-snippet-q").value.trim();
    var topic = $("sb-snippet-topic").value;
    if (q) params.set("q", q);
    if (topic) params.set("topic", topic);
    if (cfg.segment) params.set("segment", cfg.segment);
    var list = $("sb-snippets");
    return fetch(cfg.snippetsUrl + (params.toString() ? "?" + params.toString() : ""), {
      credentials: "same-origin", headers: headers(false)
    }).then(function (r) {
      if (!r.ok) throw new Error("snippets " + r.status);
      return r.json();
    }).then(function (data) {
      var items = data.items || [];
      list.textContent = "";
      if (!topic && !q) fillTopics(items);
      if (!items.length) list.appendChild(el("li", "muted", "没有找到话术"));
      items.forEach(function (s) { list.appendChild(snippetItem(s)); });
    }).catch(function () {
      list.textContent = "";
      list.appendChild(el("li", "muted", "话术库暂不可用"));
    });
  }

  function fillTopics(items) {
    var select = $("sb-snippet-topic");
    var seen = {};
    Array.prototype.forEach.call(select.options, function (o) { seen[o.value] = true; });
    items.forEach(function (s) {
      if (s.topic && !seen[s.topic]) {
        seen[s.topic] = true;
        var o = el("option", "", s.topic);
        o.value = s.topic;
        select.appendChild(o);
      }
    });
  }

  function snippetPreview(s) {
    if (s.kind === "text") return s.text || "";
    if (s.kind === "link" && s.link) return (s.link.title || "") + (s.link.desc ? " · " + s.link.desc : "");
    if (s.kind === "miniprogram" && s.miniprogram) return s.miniprogram.title || "";
    return s.text || "";
  }

  function snippetItem(s) {
    var li = el("li", "sb-snippet");
    li.dataset.snippetId = s.id;
    var head = el("div", "sb-snippet-head");
    head.appendChild(el("span", "tag info", KIND_LABELS[s.kind] || s.kind));
    head.appendChild(el("strong", "", " " + s.title));
    if (s.topic) head.appendChild(el("span", "muted", " · " + s.topic));
    li.appendChild(head);
    var preview = snippetPreview(s);
    if (preview) li.appendChild(el("div", "sb-snippet-text", preview));
    var send = el("button", "btn small primary", "发送");
    send.type = "button";
    send.disabled = !state.wecom;
    send.addEventListener("click", function () { sendSnippet(s, send); });
    li.appendChild(send);
    return li;
  }

  // A snippet as WeCom's sendChatMessage takes it.
  function chatMessage(s) {
    if (s.kind === "image") return { msgtype: "image", enterChat: true, image: { mediaid: s.media_id } };
    if (s.kind === "link") {
      var l = s.link || {};
      return { msgtype: "news", enterChat: true, news: {
        link: l.url || l.link, title: l.title || s.title, desc: l.desc || l.description || "",
        imgUrl: l.picurl || l.imgUrl || "" } };
    }
    if (s.kind === "miniprogram") {
      var m = s.miniprogram || {};
      return { msgtype: "miniprogram", enterChat: true, miniprogram: {
        // The JS-SDK wants the cover as a URL (imgUrl); a media id serves server-side sends.
        appid: m.appid, title: m.title || s.title, imgUrl: m.picurl || m.imgUrl || "",
        page: m.page || "" } };
    }
    return { msgtype: "text", enterChat: true, text: { content: s.text } };
  }

  function sendSnippet(s, button) {
    button.disabled = true;
    window.ww.sendChatMessage(chatMessage(s)).then(function () {
      toast("已发送话术「" + s.title + "」", "ok");
      return postJSON(cfg.snippetsUrl + "/" + encodeURIComponent(s.id) + "/used", {});
    }).catch(function (err) {
      toast("发送失败：" + ((err && err.errMsg) || "企业微信未响应"), "bad");
    }).then(function () { button.disabled = !state.wecom; });
  }

  // ------------------------------------------------------------------ panels' buttons

  // Other domains' panels in the customer tab (core.domain.CustomerPanel) hand their
  // content to the send actions above: [data-sb-compose] puts a text in the checked
  // send box, [data-sb-send] sends a chat message (JSON) as a snippet is sent.
  $("sb-customer").addEventListener("click", function (event) {
    var button = event.target.closest("[data-sb-compose], [data-sb-send]");
    if (!button) return;
    var touchId = button.getAttribute("data-sb-touch");
    if (button.hasAttribute("data-sb-compose")) {
      compose(button.getAttribute("data-sb-compose"), touchId);
      return;
    }
    if (!state.wecom) {
      toast("需在企业微信中打开才能发送", "warn");
      return;
    }
    var message;
    try {
      message = JSON.parse(button.getAttribute("data-sb-send"));
    } catch (e) {
      return;
    }
    button.disabled = true;
    window.ww.sendChatMessage(message).then(function () {
      toast("已发送", "ok");
      return recordTouchSent(touchId);
    }).catch(function (err) {
      toast("发送失败：" + ((err && err.errMsg) || "企业微信未响应"), "bad");
    }).then(function () { button.disabled = false; });
  });

  // A text for the checked send box; the touch it came from, to record once sent.
  function compose(text, touchId) {
    textBox.value = text;
    state.overrideKey = null;
    state.composedTouch = touchId || null;
    showTab("tab-check");
    scheduleCheck(0);
    textBox.focus();
  }

  // ------------------------------------------------------------------ the SOP touch

  // Opened by a digest's deep link: the touch, filled in by the server for its customer.
  // ``alone``: no conversation was read (not in a chat, or outside WeCom) — the deep
  // link's customer is shown, read-only: a send can only go to the chat it is opened in.
  function openDeepLink(alone) {
    if (!deepLink) return null;
    var loads = [];
    if (alone && deepLink.customer) {
      loads.push(loadConversation(cfg.customerUrl + "?external_userid=" + encodeURIComponent(deepLink.customer))
        .catch(function () { return null; }));
    }
    loads.push(loadTouch());
    return Promise.all(loads);
  }

  function loadTouch() {
    var box = $("sb-touch");
    if (!/^[0-9]{1,18}$/.test(deepLink.touch)) {
      drawTouchMessage("这条提醒的链接不完整，请从提醒消息重新打开。");
      return Promise.resolve(null);
    }
    var url = cfg.touchesUrl + deepLink.touch;
    if (deepLink.customer) url += "?customer=" + encodeURIComponent(deepLink.customer);
    return fetch(url, { credentials: "same-origin", headers: headers(false) }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; },
                           function () { return { status: r.status, body: {} }; });
    }).then(function (res) {
      if (res.status === 200) {
        state.touch = res.body;
        drawTouch();
        return;
      }
      if (res.status === 401) {
        drawTouchMessage("登录已过期，请关闭侧边栏后重新打开。");
        return;
      }
      var message = res.body && res.body.error && res.body.error.message;
      drawTouchMessage(message || ("无法打开这条提醒（" + res.status + "）"));
    }).catch(function () {
      drawTouchMessage("网络异常，未能打开这条提醒。");
    }).then(function () { box.hidden = false; });
  }

  function drawTouchMessage(text) {
    var box = $("sb-touch");
    box.textContent = "";
    box.className = "sb-touch is-closed";
    box.appendChild(el("p", "sb-touch-problem", text));
    box.hidden = false;
  }

  // Why this touch cannot be sent from here now ("" when it can).
  function touchBlocked(t) {
    if (t.problem) return t.problem.message;
    if (state.chatId) return "这是客户群的聊天：请在与该客户的单聊中打开侧边栏发送。";
    if (!state.wecom || !state.externalUserId) {
      return "请在与该客户的单聊中打开侧边栏发送：这条提醒也在「客户画像」的「待跟进的 SOP 触达」里。";
    }
    if (state.externalUserId !== t.customer) return "当前聊天不是这条提醒的客户，不能在此发送。";
    return "";
  }

  function drawTouch() {
    var t = state.touch;
    var box = $("sb-touch");
    box.textContent = "";
    var blocked = touchBlocked(t);
    box.className = "sb-touch" + (t.problem ? " is-closed" : "");
    box.dataset.touchId = t.id;
    var head = el("div", "sb-touch-head");
    head.appendChild(el("span", "tag info", "SOP " + (t.delivery_label || "提醒")));
    head.appendChild(el("strong", "", t.campaign));
    head.appendChild(el("span", "muted", "· 第 " + t.step.position + " 步" + (t.step.name ? " " + t.step.name : "")));
    box.appendChild(head);
    var meta = el("div", "sb-touch-meta");
    meta.appendChild(el("span", "muted", "应跟进 "));
    meta.appendChild(el("span", "mono", t.due_label));
    var tone = t.sent ? "ok" : (t.problem ? "warn" : "info");
    var stateTag = el("span", "tag " + tone, t.state_label);
    stateTag.id = "sb-touch-state";
    meta.appendChild(stateTag);
    box.appendChild(meta);
    if (t.text) box.appendChild(el("div", "sb-touch-text", t.text));
    if (t.link) {
      var link = el("div", "sb-touch-link");
      link.appendChild(el("strong", "", t.link.title));
      if (t.link.desc) link.appendChild(el("div", "muted", t.link.desc));
      link.appendChild(el("div", "mono muted", t.link.url));
      box.appendChild(link);
    }
    if (t.sent) {
      box.appendChild(el("p", "sb-touch-done", "✓ 已于 " + t.sent.at_label + " 发送给客户，已记录到 SOP 触达"));
      return;
    }
    if (blocked) {
      box.appendChild(el("p", "sb-touch-problem", blocked));
      return;
    }
    if (t.kind === "image" || t.kind === "file" || t.kind === "miniprogram") {
      box.appendChild(el("p", "muted sb-touch-note", "含素材：请在企业微信中选择素材发送；文字可在此检查后发送。"));
    }
    var actions = el("div", "sb-touch-actions");
    if (t.text) {
      var use = el("button", "btn primary small", "填入并检查");
      use.type = "button";
      use.id = "sb-touch-compose";
      use.addEventListener("click", function () { compose(t.text, String(t.id)); });
      actions.appendChild(use);
    }
    if (t.chat_message) {
      var card = el("button", "btn small", "发送链接卡片");
      card.type = "button";
      card.id = "sb-touch-card";
      card.addEventListener("click", function () {
        card.disabled = true;
        window.ww.sendChatMessage(t.chat_message).then(function () {
          toast("已发送", "ok");
          return recordTouchSent(String(t.id));
        }).catch(function (err) {
          toast("发送失败：" + ((err && err.errMsg) || "企业微信未响应"), "bad");
        }).then(function () { card.disabled = false; });
      });
      actions.appendChild(card);
    }
    box.appendChild(actions);
    box.appendChild(el("p", "muted sb-touch-note", "发送前会先做合规检查；发送后自动记录到这条 SOP 触达。"));
  }

  // The touch's content reached its customer from this sidebar: record it on the touch
  // (once — the server answers a repeat with the first record).
  function recordTouchSent(touchId) {
    if (!touchId || !state.externalUserId) return null;
    return postJSON(cfg.touchesUrl + encodeURIComponent(touchId) + "/sent", {
      external_userid: state.externalUserId
    }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; },
                           function () { return { status: r.status, body: {} }; });
    }).then(function (res) {
      if (res.status !== 200 && res.status !== 201) {
        var message = (res.body.error && res.body.error.message) || ("记录失败（" + res.status + "）");
        toast("已发送，但未记录到 SOP 触达：" + message, "warn");
        return;
      }
      toast("已发送，并记录到 SOP 触达", "ok");
      Array.prototype.forEach.call(document.querySelectorAll('[data-sb-touch="' + touchId + '"]'), function (b) {
        b.remove();
      });
      if (state.touch && String(state.touch.id) === String(touchId)) {
        state.touch.sent = res.body.sent;
        state.touch.state_label = "客户经理已发送";
        drawTouch();
      }
    }).catch(function () {
      toast("已发送，但网络异常，未记录到 SOP 触达", "warn");
    });
  }

  // ------------------------------------------------------------------ start

  updateSend();
  startWeCom();
})();
